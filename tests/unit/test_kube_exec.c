/*
 * Unit tests of the exec client's pure parts: the exec URL (one escaped
 * command= per argv element), the server URL split, channel 3 status
 * decoding (statuses recorded from kube-apiserver v1.35 through kwok, plus
 * hand-made malformed ones), resize framing and the receive demultiplexer
 * fed with messages cut into every possible pair of fragments. Also the
 * client's argument checks, which need no server.
 */
#include "kube_exec.h"
#include "test.h"

#include <errno.h>

/* ---- exec path ---- */

static void test_path_basic(void)
{
	const char *argv[] = { "echo", "hello", NULL };
	struct kube_exec_req req = { .namespace = "sandboxes", .pod = "sb-1", .argv = argv,
				     .with_stdout = true, .with_stderr = true };
	char *p = NULL, err[128];
	CHECK_INT(kube_exec_build_path("", &req, &p, err, sizeof(err)), KUBE_OK);
	CHECK_STR(p, "/api/v1/namespaces/sandboxes/pods/sb-1/exec?command=echo&command=hello"
		     "&stdin=false&stdout=true&stderr=true&tty=false");
	free(p);

	req.container = "main";
	req.with_stdin = true;
	CHECK_INT(kube_exec_build_path("/k8s", &req, &p, err, sizeof(err)), KUBE_OK);
	CHECK_STR(p, "/k8s/api/v1/namespaces/sandboxes/pods/sb-1/exec?command=echo&command=hello"
		     "&container=main&stdin=true&stdout=true&stderr=true&tty=false");
	free(p);

	req.with_stderr = false;
	req.tty = true;
	CHECK_INT(kube_exec_build_path(NULL, &req, &p, err, sizeof(err)), KUBE_OK);
	CHECK(strstr(p, "&stderr=false&tty=true") != NULL);
	free(p);
}

static void test_path_escaping(void)
{
	/* argv is never joined: each element is one value, fully escaped */
	const char *argv[] = { "sh", "-c", "echo a&b=c; cat /etc/passwd #x", "", "ü\t\n%", NULL };
	struct kube_exec_req req = { .namespace = "ns", .pod = "p", .argv = argv,
				     .with_stdout = true };
	char *p = NULL, err[128];
	CHECK_INT(kube_exec_build_path("", &req, &p, err, sizeof(err)), KUBE_OK);
	CHECK_STR(p, "/api/v1/namespaces/ns/pods/p/exec?command=sh&command=-c"
		     "&command=echo%20a%26b%3Dc%3B%20cat%20%2Fetc%2Fpasswd%20%23x"
		     "&command=&command=%C3%BC%09%0A%25"
		     "&stdin=false&stdout=true&stderr=false&tty=false");
	free(p);

	/* a hostile pod name stays one segment */
	req.pod = "a/../../b";
	CHECK_INT(kube_exec_build_path("", &req, &p, err, sizeof(err)), KUBE_OK);
	static const char want[] = "/api/v1/namespaces/ns/pods/a%2F..%2F..%2Fb/exec?";
	CHECK(strncmp(p, want, strlen(want)) == 0);
	free(p);
}

static void test_path_invalid(void)
{
	const char *argv[] = { "true", NULL };
	const char *empty[] = { NULL };
	char *p = (char *)1, err[128];
	struct kube_exec_req req = { .namespace = "ns", .pod = "p", .argv = empty,
				     .with_stdout = true };
	CHECK_INT(kube_exec_build_path("", &req, &p, err, sizeof(err)), KUBE_ERR_ARG);
	CHECK(p == NULL);
	CHECK(strstr(err, "argv is empty") != NULL);
	req.argv = NULL;
	CHECK_INT(kube_exec_build_path("", &req, &p, err, sizeof(err)), KUBE_ERR_ARG);
	req.argv = argv;
	req.pod = "";
	CHECK_INT(kube_exec_build_path("", &req, &p, err, sizeof(err)), KUBE_ERR_ARG);
	req.pod = "..";
	CHECK_INT(kube_exec_build_path("", &req, &p, err, sizeof(err)), KUBE_ERR_ARG);
	req.pod = "p";
	req.namespace = NULL;
	CHECK_INT(kube_exec_build_path("", &req, &p, err, sizeof(err)), KUBE_ERR_ARG);
	req.namespace = "ns";
	req.container = "";
	CHECK_INT(kube_exec_build_path("", &req, &p, err, sizeof(err)), KUBE_ERR_ARG);
	req.container = NULL;
	req.tty = true;
	req.with_stderr = true;
	CHECK_INT(kube_exec_build_path("", &req, &p, err, sizeof(err)), KUBE_ERR_ARG);
	CHECK(strstr(err, "tty") != NULL);
	req.tty = false;
	req.with_stderr = false;
	req.with_stdout = false;
	CHECK_INT(kube_exec_build_path("", &req, &p, err, sizeof(err)), KUBE_ERR_ARG);
	CHECK_INT(kube_exec_build_path("", NULL, &p, err, sizeof(err)), KUBE_ERR_ARG);
}

static void test_path_too_long(void)
{
	/* a command line that escapes beyond the limit is refused, not cut */
	size_t n = KUBE_EXEC_MAX_PATH / 3 + 16;
	char *big = malloc(n + 1);
	REQUIRE(big);
	memset(big, '/', n); /* each '/' escapes to three bytes */
	big[n] = '\0';
	const char *argv[] = { "echo", big, NULL };
	struct kube_exec_req req = { .namespace = "ns", .pod = "p", .argv = argv,
				     .with_stdout = true };
	char *p = NULL, err[128];
	CHECK_INT(kube_exec_build_path("", &req, &p, err, sizeof(err)), KUBE_ERR_TOO_LARGE);
	CHECK(p == NULL);
	/* just under it is fine */
	big[KUBE_EXEC_MAX_PATH / 3 - 100] = '\0';
	CHECK_INT(kube_exec_build_path("", &req, &p, err, sizeof(err)), KUBE_OK);
	CHECK(p && strlen(p) <= KUBE_EXEC_MAX_PATH);
	free(p);
	free(big);
}

/* ---- server URL ---- */

static void check_server(const char *url, const char *host, int port, bool tls, const char *base)
{
	char *h = NULL, *b = NULL;
	int pt = 0;
	bool t = !tls;
	int rc = kube_exec_parse_server(url, &h, &pt, &t, &b);
	CHECK_INT(rc, 0);
	if (rc == 0) {
		CHECK_STR(h, host);
		CHECK_INT(pt, port);
		CHECK_INT(t, tls);
		CHECK_STR(b, base);
	}
	free(h);
	free(b);
}

static void test_parse_server(void)
{
	check_server("https://127.0.0.1:6443", "127.0.0.1", 6443, true, "");
	check_server("https://kubernetes.default.svc", "kubernetes.default.svc", 443, true, "");
	check_server("http://localhost:8080/", "localhost", 8080, false, "");
	check_server("https://example.com/k8s/clusters/c-1/", "example.com", 443, true,
		     "/k8s/clusters/c-1");
	check_server("https://[::1]:6443", "::1", 6443, true, "");
	check_server("https://[fd00::1]", "fd00::1", 443, true, "");

	static const char *bad[] = {
		"ftp://x", "127.0.0.1:6443", "https://", "https://:443", "https://h:",
		"https://h:0", "https://h:65536", "https://h:12a", "https://h:123456",
		"https://user:pw@h", "https://h/?q=1", "https://h#frag", "https://[::1",
		"https://[]:1", "https://[::1]x", "",
	};
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		char *h = (char *)1, *b = (char *)1;
		int pt;
		bool t;
		int rc = kube_exec_parse_server(bad[i], &h, &pt, &t, &b);
		if (rc != -EINVAL)
			fprintf(stderr, "accepted: \"%s\"\n", bad[i]);
		CHECK_INT(rc, -EINVAL);
		CHECK(h == NULL && b == NULL);
	}
}

/* ---- status ---- */

/* Recorded on the wire (a raw WebSocket client) from kube-apiserver v1.35.4,
 * whose stream translator speaks v5 and SPDY to kwok v0.8.0; the v4 one comes
 * from kwok's own WebSocket server (the apiserver proxies v4 unchanged). */
static const char REC_SUCCESS[] = "{\"metadata\":{},\"status\":\"Success\"}";
#define REC_EXIT3_JSON                                                                  \
	"{\"metadata\":{},\"status\":\"Failure\",\"message\":\"command terminated with "    \
	"non-zero exit code: command terminated with exit code 3\",\"reason\":"               \
	"\"NonZeroExitCode\",\"details\":{\"causes\":[{\"reason\":\"ExitCode\",\"message\":" \
	"\"3\"}]}}"
static const char REC_EXIT3[] = REC_EXIT3_JSON;
static const char REC_V4_EXIT4[] =
	"{\"status\":\"Failure\",\"message\":\"command terminated with non-zero exit code: "
	"exit status 4\",\"reason\":\"NonZeroExitCode\",\"details\":{\"causes\":[{\"reason\":"
	"\"ExitCode\",\"message\":\"4\"}]}}";
static const char REC_INTERNAL[] =
	"{\"metadata\":{},\"status\":\"Failure\",\"message\":\"Internal error occurred: "
	"Internal error occurred: error executing command in container: cmd start: "
	"no-such-program-xyz : exec: \\\"no-such-program-xyz\\\": executable file not found in "
	"$PATH\",\"reason\":\"InternalError\",\"details\":{\"causes\":[{\"message\":\"Internal "
	"error occurred: error executing command in container: cmd start: no-such-program-xyz : "
	"exec: \\\"no-such-program-xyz\\\": executable file not found in $PATH\"}]},\"code\":500}";

static int decode(const char *json, struct kube_error *e)
{
	return kube_exec_decode_status(json, strlen(json), e);
}

static void test_status(void)
{
	struct kube_error e;
	CHECK_INT(decode(REC_SUCCESS, &e), 0);
	CHECK_INT(e.code, KUBE_OK);

	CHECK_INT(decode(REC_EXIT3, &e), 3);
	CHECK_INT(e.code, KUBE_OK);
	CHECK_STR(e.reason, "NonZeroExitCode");
	CHECK(strstr(e.message, "exit code 3") != NULL);

	CHECK_INT(decode(REC_V4_EXIT4, &e), 4);
	CHECK_INT(e.code, KUBE_OK);

	CHECK_INT(decode(REC_INTERNAL, &e), -1);
	CHECK_INT(e.code, KUBE_ERR_SERVER);
	CHECK_INT(e.http_status, 500);
	CHECK_STR(e.reason, "InternalError");
	CHECK(strstr(e.message, "executable file not found") != NULL);

	/* signals come through as 128+N; the cause may not be the first */
	CHECK_INT(decode("{\"status\":\"Failure\",\"reason\":\"NonZeroExitCode\",\"details\":"
			 "{\"causes\":[{\"reason\":\"Other\",\"message\":\"x\"},"
			 "{\"reason\":\"ExitCode\",\"message\":\"137\"}]}}",
			 &e),
		  137);
	CHECK_INT(decode("{\"status\":\"Failure\",\"reason\":\"NonZeroExitCode\",\"details\":"
			 "{\"causes\":[{\"reason\":\"ExitCode\",\"message\":\"2147483647\"}]}}",
			 &e),
		  2147483647);

	/* malformed exit codes are protocol errors, never a made-up code */
	static const char *badcodes[] = { "\"-1\"", "\"2147483648\"", "\"3x\"", "\"\"", "3",
					  "\" 3\"", "\"99999999999\"", "null" };
	for (size_t i = 0; i < sizeof(badcodes) / sizeof(badcodes[0]); i++) {
		char json[256];
		snprintf(json, sizeof(json),
			 "{\"status\":\"Failure\",\"reason\":\"NonZeroExitCode\",\"details\":"
			 "{\"causes\":[{\"reason\":\"ExitCode\",\"message\":%s}]}}",
			 badcodes[i]);
		CHECK_INT(decode(json, &e), -1);
		CHECK_INT(e.code, KUBE_ERR_PROTOCOL);
	}
	CHECK_INT(decode("{\"status\":\"Failure\",\"reason\":\"NonZeroExitCode\"}", &e), -1);
	CHECK_INT(e.code, KUBE_ERR_PROTOCOL);

	/* other failures keep their code and message */
	CHECK_INT(decode("{\"status\":\"Failure\",\"message\":\"container not found\","
			 "\"reason\":\"BadRequest\",\"code\":400}",
			 &e),
		  -1);
	CHECK_INT(e.code, KUBE_ERR_BAD_REQUEST);
	CHECK_STR(e.message, "container not found");
	CHECK_INT(decode("{\"status\":\"Failure\"}", &e), -1);
	CHECK_INT(e.code, KUBE_ERR_SERVER);

	/* not a status */
	static const char *junk[] = { "", "[]", "\"Success\"", "{", "{\"status\":\"Maybe\"}",
				      "{\"status\":1}", "{}" };
	for (size_t i = 0; i < sizeof(junk) / sizeof(junk[0]); i++) {
		CHECK_INT(decode(junk[i], &e), -1);
		CHECK_INT(e.code, KUBE_ERR_PROTOCOL);
		CHECK(e.message[0] != '\0');
	}
	/* the length given is the length used: no reading past it */
	CHECK_INT(kube_exec_decode_status(REC_SUCCESS, 10, &e), -1);
}

/* ---- framing ---- */

static void test_resize_frame(void)
{
	unsigned char b[64];
	size_t n = kube_exec_frame_resize(b, sizeof(b), 80, 24);
	CHECK_INT(n, 1 + strlen("{\"Width\":80,\"Height\":24}"));
	CHECK_INT(b[0], 4);
	CHECK(memcmp(b + 1, "{\"Width\":80,\"Height\":24}", n - 1) == 0);
	CHECK_INT(kube_exec_frame_resize(b, 10, 80, 24), 0);
	CHECK_INT(kube_exec_frame_resize(b, 1, 80, 24), 0);
	n = kube_exec_frame_resize(b, sizeof(b), 65535, 65535);
	CHECK(n > 0 && memcmp(b + 1, "{\"Width\":65535,\"Height\":65535}", n - 1) == 0);
}

/* ---- demux ---- */

struct sink_rec {
	struct buf out, err;
	int statuses;
	char status[256];
	int empty_data_calls;
};

static void rec_data(void *ud, int channel, const char *data, size_t len)
{
	struct sink_rec *r = ud;
	if (len == 0)
		r->empty_data_calls++;
	if (buf_append(channel == 1 ? &r->out : &r->err, data, len) != 0)
		abort();
}

static void rec_status(void *ud, const char *json, size_t len)
{
	struct sink_rec *r = ud;
	r->statuses++;
	snprintf(r->status, sizeof(r->status), "%.*s", (int)len, json);
}

static const struct kube_exec_demux_sink sink = { rec_data, rec_status };

static void rec_init(struct sink_rec *r)
{
	memset(r, 0, sizeof(*r));
	buf_init(&r->out, 1 << 20);
	buf_init(&r->err, 1 << 20);
}

static void rec_release(struct sink_rec *r)
{
	buf_release(&r->out);
	buf_release(&r->err);
}

struct msg {
	const char *data;
	size_t len;
};

/* The stream a v5 exec of `sh -c 'echo out; echo err >&2; exit 3'` produces:
 * the translator's empty "ready" message on stdout, then data, then status. */
static const struct msg STREAM[] = {
	{ "\x01", 1 },
	{ "\x01out\n", 5 },
	{ "\x02" "err\n", 5 },
	{ "", 0 },                /* an empty message: ignored */
	{ "\x07junk", 5 },        /* unknown channel: ignored */
	{ "\x03", 1 },            /* an empty status: not a status */
	{ "\x03" REC_EXIT3_JSON, 0 },
};

static void check_stream_result(struct sink_rec *r)
{
	CHECK_INT(r->out.len, 4);
	CHECK(r->out.data && memcmp(r->out.data, "out\n", 4) == 0);
	CHECK_INT(r->err.len, 4);
	CHECK(r->err.data && memcmp(r->err.data, "err\n", 4) == 0);
	CHECK_INT(r->statuses, 1);
	struct kube_error e;
	CHECK_INT(kube_exec_decode_status(r->status, strlen(r->status), &e), 3);
	CHECK_INT(r->empty_data_calls, 0);
}

static void test_demux_whole_messages(void)
{
	struct kube_exec_demux d;
	struct sink_rec r;
	kube_exec_demux_init(&d);
	rec_init(&r);
	for (size_t i = 0; i < sizeof(STREAM) / sizeof(STREAM[0]); i++) {
		size_t len = STREAM[i].len ? STREAM[i].len : strlen(STREAM[i].data);
		if (i == 3)
			len = 0;
		CHECK_INT(kube_exec_demux_feed(&d, STREAM[i].data, len, true, &sink, &r), KUBE_OK);
	}
	check_stream_result(&r);
	rec_release(&r);
	kube_exec_demux_release(&d);
}

/* Every message cut at every pair of points into three fragments: the
 * channel byte belongs to the message, not to the fragment. */
static void test_demux_fragments(void)
{
	int failed_before = t_failed;
	for (size_t i = 0; i < sizeof(STREAM) / sizeof(STREAM[0]); i++) {
		size_t len = STREAM[i].len ? STREAM[i].len : strlen(STREAM[i].data);
		if (i == 3)
			continue;
		for (size_t a = 0; a <= len; a++) {
			for (size_t b = a; b <= len; b++) {
				struct kube_exec_demux d;
				struct sink_rec r;
				kube_exec_demux_init(&d);
				rec_init(&r);
				for (size_t j = 0; j < sizeof(STREAM) / sizeof(STREAM[0]); j++) {
					const char *m = STREAM[j].data;
					size_t ml = STREAM[j].len ? STREAM[j].len : strlen(m);
					if (j == 3)
						ml = 0;
					if (j != i) {
						CHECK_INT(kube_exec_demux_feed(&d, m, ml, true, &sink, &r),
							  KUBE_OK);
						continue;
					}
					CHECK_INT(kube_exec_demux_feed(&d, m, a, false, &sink, &r), KUBE_OK);
					CHECK_INT(kube_exec_demux_feed(&d, m + a, b - a, false, &sink, &r),
						  KUBE_OK);
					CHECK_INT(kube_exec_demux_feed(&d, m + b, ml - b, true, &sink, &r),
						  KUBE_OK);
				}
				check_stream_result(&r);
				rec_release(&r);
				kube_exec_demux_release(&d);
				if (t_failed != failed_before) {
					fprintf(stderr, "  message %zu cut at %zu and %zu\n", i, a, b);
					return;
				}
			}
		}
	}
}

static void test_demux_binary_and_large(void)
{
	/* every byte value, including 0 and 255, is data after the channel byte */
	unsigned char m[1 + 512];
	m[0] = 1;
	for (int i = 0; i < 512; i++)
		m[1 + i] = (unsigned char)i;
	struct kube_exec_demux d;
	struct sink_rec r;
	kube_exec_demux_init(&d);
	rec_init(&r);
	CHECK_INT(kube_exec_demux_feed(&d, m, sizeof(m), true, &sink, &r), KUBE_OK);
	CHECK_INT(r.out.len, 512);
	CHECK(memcmp(r.out.data, m + 1, 512) == 0);
	/* a stdin-channel message from the server (never sent; ignored) */
	CHECK_INT(kube_exec_demux_feed(&d, "\x00zz", 3, true, &sink, &r), KUBE_OK);
	CHECK_INT(r.out.len, 512);

	/* a message over the message limit, streamed in pieces, is refused */
	d.max_message = 1000;
	CHECK_INT(kube_exec_demux_feed(&d, m, 500, false, &sink, &r), KUBE_OK);
	CHECK_INT(kube_exec_demux_feed(&d, m + 1, 499, false, &sink, &r), KUBE_OK);
	CHECK_INT(kube_exec_demux_feed(&d, m + 1, 1, false, &sink, &r), KUBE_OK); /* 1000 */
	CHECK_INT(kube_exec_demux_feed(&d, m + 1, 1, false, &sink, &r), KUBE_ERR_TOO_LARGE);
	rec_release(&r);
	kube_exec_demux_release(&d);

	/* a status over KUBE_EXEC_MAX_STATUS is refused before it is whole */
	kube_exec_demux_init(&d);
	rec_init(&r);
	char *big = malloc(KUBE_EXEC_MAX_STATUS);
	REQUIRE(big);
	memset(big, ' ', KUBE_EXEC_MAX_STATUS);
	CHECK_INT(kube_exec_demux_feed(&d, "\x03{", 2, false, &sink, &r), KUBE_OK);
	CHECK_INT(kube_exec_demux_feed(&d, big, KUBE_EXEC_MAX_STATUS - 2, false, &sink, &r),
		  KUBE_OK);
	CHECK_INT(kube_exec_demux_feed(&d, "}", 1, false, &sink, &r), KUBE_OK);
	CHECK_INT(kube_exec_demux_feed(&d, " ", 1, true, &sink, &r), KUBE_ERR_TOO_LARGE);
	CHECK_INT(r.statuses, 0);
	free(big);
	rec_release(&r);
	kube_exec_demux_release(&d);

	/* exactly at the limit is accepted */
	kube_exec_demux_init(&d);
	rec_init(&r);
	char *st = malloc(KUBE_EXEC_MAX_STATUS + 1);
	REQUIRE(st);
	st[0] = 3;
	memset(st + 1, ' ', KUBE_EXEC_MAX_STATUS);
	memcpy(st + 1, REC_SUCCESS, strlen(REC_SUCCESS));
	CHECK_INT(kube_exec_demux_feed(&d, st, KUBE_EXEC_MAX_STATUS + 1, true, &sink, &r), KUBE_OK);
	CHECK_INT(r.statuses, 1);
	free(st);
	rec_release(&r);
	kube_exec_demux_release(&d);
}

/* ---- the client without a server ---- */

static void test_client_args(void)
{
	char err[256];
	struct kube_config cfg = { 0 };
	CHECK(kube_exec_client_new(&cfg, err, sizeof(err)) == NULL);
	CHECK(strstr(err, "no API server URL") != NULL);
	cfg.server = "ftp://x";
	CHECK(kube_exec_client_new(&cfg, err, sizeof(err)) == NULL);
	CHECK(strstr(err, "unusable API server URL") != NULL);

	/* a CA that is not a certificate is refused at once */
	cfg.server = "https://127.0.0.1:1";
	cfg.ca_pem = "-----BEGIN CERTIFICATE-----\nnope\n-----END CERTIFICATE-----\n";
	cfg.ca_len = strlen(cfg.ca_pem);
	CHECK(kube_exec_client_new(&cfg, err, sizeof(err)) == NULL);
	CHECK(strstr(err, "CA bundle") != NULL);
	cfg.ca_pem = NULL;
	cfg.ca_len = 0;

	/* plain http, nothing listening on port 1: starting works, connecting fails */
	cfg.server = "http://127.0.0.1:1";
	struct kube_exec_client *c = kube_exec_client_new(&cfg, err, sizeof(err));
	REQUIRE(c);
	const char *argv[] = { "true", NULL };
	struct kube_exec_req req = { .namespace = "ns", .pod = "p", .argv = argv,
				     .with_stdout = true };
	struct kube_exec_session *s = NULL;
	struct kube_error e;
	req.pod = "";
	CHECK_INT(kube_exec_start(c, &req, NULL, NULL, &s, &e), KUBE_ERR_ARG);
	CHECK(s == NULL);
	req.pod = "p";

	struct kube_exec_result res;
	CHECK_INT(kube_exec_run(c, &req, NULL, 0, 100, 5000, &res), KUBE_ERR_TRANSPORT);
	CHECK_INT(res.exit_code, -1);
	CHECK(!res.timed_out);
	CHECK(strstr(res.error.message, "ns/p") != NULL);
	kube_exec_result_release(&res);

	/* a token file that cannot be read is refused before anything is sent */
	kube_exec_client_free(c);
	cfg.token_file = "/nonexistent/token";
	c = kube_exec_client_new(&cfg, err, sizeof(err));
	REQUIRE(c);
	CHECK_INT(kube_exec_start(c, &req, NULL, NULL, &s, &e), KUBE_ERR_UNAUTHORIZED);
	CHECK(strstr(e.message, "/nonexistent/token") != NULL);
	CHECK_INT(kube_exec_client_active(c), 0);
	kube_exec_client_free(c);
	kube_exec_client_free(NULL);
}

int main(void)
{
	RUN(test_path_basic);
	RUN(test_path_escaping);
	RUN(test_path_invalid);
	RUN(test_path_too_long);
	RUN(test_parse_server);
	RUN(test_status);
	RUN(test_resize_frame);
	RUN(test_demux_whole_messages);
	RUN(test_demux_fragments);
	RUN(test_demux_binary_and_large);
	RUN(test_client_args);
	return test_summary();
}
