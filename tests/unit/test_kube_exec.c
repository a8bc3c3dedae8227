/*
 * Unit tests of the exec client's pure parts: the exec URL (one escaped
 * command= per argv element), the server URL split, channel 3 status
 * decoding (statuses recorded from kube-apiserver v1.35 through kwok, plus
 * hand-made malformed ones), resize framing and the receive demultiplexer
 * fed with messages cut into every possible pair of fragments; the WebSocket
 * framing (header parsing and every refusal, split headers, masking, the
 * Sec-WebSocket-Accept of RFC 6455's example, the handshake answer). Also the
 * client's argument checks, which need no server.
 */
#include "kube_exec.h"
#include "test.h"

#include <errno.h>
#include <stdarg.h>

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

/* ---- WebSocket framing and handshake ---- */

static void test_ws_accept(void)
{
	char out[29];
	/* RFC 6455 section 1.3 */
	CHECK_INT(kube_ws_accept("dGhlIHNhbXBsZSBub25jZQ==", out), 0);
	CHECK_STR(out, "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=");
	CHECK_INT(strlen(out), 28);
}

static int parse_hdr(const char *bytes, size_t n, bool in_message, struct kube_ws_header *h,
		     const char **why)
{
	*why = NULL;
	return kube_ws_parse_header((const unsigned char *)bytes, n, in_message, h, why);
}

static void test_ws_parse_header(void)
{
	struct kube_ws_header h;
	const char *why;
	CHECK_INT(parse_hdr("", 0, false, &h, &why), 0);
	CHECK_INT(parse_hdr("\x82", 1, false, &h, &why), 0);
	CHECK_INT(parse_hdr("\x82\x05", 2, false, &h, &why), 2);
	CHECK(h.fin);
	CHECK_INT(h.opcode, KUBE_WS_OP_BINARY);
	CHECK_INT(h.len, 5);
	CHECK_INT(parse_hdr("\x02\x7d", 2, false, &h, &why), 2);
	CHECK(!h.fin);
	CHECK_INT(h.len, 125);
	/* 16-bit length: needs all four bytes */
	CHECK_INT(parse_hdr("\x81\x7e\x01", 3, false, &h, &why), 0);
	CHECK_INT(parse_hdr("\x81\x7e\x01\x00", 4, false, &h, &why), 4);
	CHECK_INT(h.opcode, KUBE_WS_OP_TEXT);
	CHECK_INT(h.len, 256);
	/* 64-bit length: needs all ten */
	CHECK_INT(parse_hdr("\x82\x7f\x00\x00\x00\x01\x00\x00\x00", 9, false, &h, &why), 0);
	CHECK_INT(parse_hdr("\x82\x7f\x00\x00\x00\x01\x00\x00\x00\x02", 10, false, &h, &why),
		  10);
	CHECK(h.len == 0x100000002ull);
	/* continuation inside a message, control frames anywhere */
	CHECK_INT(parse_hdr("\x80\x01", 2, true, &h, &why), 2);
	CHECK_INT(h.opcode, KUBE_WS_OP_CONT);
	CHECK_INT(parse_hdr("\x89\x00", 2, true, &h, &why), 2);
	CHECK_INT(parse_hdr("\x8a\x7d", 2, false, &h, &why), 2);
	CHECK_INT(parse_hdr("\x88\x02", 2, true, &h, &why), 2);

	/* refusals, each decided from the bytes it needs and no more */
	static const struct {
		const char *bytes;
		size_t n;
		bool in_message;
		const char *why;
	} bad[] = {
		{ "\x82\x85", 2, false, "masked" },
		{ "\xc2\x00", 2, false, "reserved" }, /* RSV1 */
		{ "\xa2\x00", 2, false, "reserved" }, /* RSV2 */
		{ "\x92\x00", 2, false, "reserved" }, /* RSV3 */
		{ "\x83\x00", 2, false, "unknown opcode" },
		{ "\x8b\x00", 2, false, "unknown opcode" },
		{ "\x89\x7e", 2, false, "longer than 125" },
		{ "\x88\x7f", 2, false, "longer than 125" },
		{ "\x09\x00", 2, false, "fragmented control" },
		{ "\x80\x00", 2, false, "continuation frame outside" },
		{ "\x02\x00", 2, true, "new data frame inside" },
		{ "\x81\x00", 2, true, "new data frame inside" },
		{ "\x82\x7f\x80\x00\x00\x00\x00\x00\x00\x00", 10, false, "top bit" },
	};
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		CHECK_INT(parse_hdr(bad[i].bytes, bad[i].n, bad[i].in_message, &h, &why), -1);
		CHECK(why && strstr(why, bad[i].why) != NULL);
	}
}

static void test_ws_frame_header(void)
{
	static const uint64_t lens[] = { 0, 1, 125, 126, 127, 65535, 65536, 1ull << 40 };
	const unsigned char mask[4] = { 0x12, 0x34, 0x56, 0x78 };
	for (size_t i = 0; i < sizeof(lens) / sizeof(lens[0]); i++) {
		unsigned char hb[KUBE_WS_MAX_HEADER];
		size_t hl = kube_ws_frame_header(hb, true, KUBE_WS_OP_BINARY, lens[i], NULL);
		CHECK_INT(hl, lens[i] < 126 ? 2 : lens[i] <= 65535 ? 4 : 10);
		struct kube_ws_header h;
		const char *why = NULL;
		CHECK_INT(kube_ws_parse_header(hb, hl, false, &h, &why), (int)hl);
		CHECK(h.len == lens[i] && h.fin && h.opcode == KUBE_WS_OP_BINARY);
		/* masked: the mask bit and the key follow the length */
		size_t ml = kube_ws_frame_header(hb, false, KUBE_WS_OP_TEXT, lens[i], mask);
		CHECK_INT(ml, hl + 4);
		CHECK_INT(hb[0], 0x01);
		CHECK(hb[1] & 0x80);
		CHECK(memcmp(hb + hl, mask, 4) == 0);
	}
	unsigned char hb[KUBE_WS_MAX_HEADER];
	CHECK_INT(kube_ws_frame_header(hb, true, KUBE_WS_OP_BINARY, 300, mask), 8);
	CHECK(memcmp(hb, "\x82\xfe\x01\x2c\x12\x34\x56\x78", 8) == 0);

	/* masking: every length and alignment against the byte-wise rule */
	unsigned char data[67], ref[67], orig[67];
	for (size_t i = 0; i < sizeof(data); i++)
		orig[i] = (unsigned char)(i * 7 + 3);
	for (size_t off = 0; off < 3; off++) {
		for (size_t n = 0; n + off <= sizeof(data); n++) {
			memcpy(data, orig, sizeof(data));
			memcpy(ref, orig, sizeof(ref));
			kube_ws_mask(data + off, n, mask);
			for (size_t i = 0; i < n; i++)
				ref[off + i] ^= mask[i % 4];
			CHECK(memcmp(data, ref, sizeof(data)) == 0);
			kube_ws_mask(data + off, n, mask);
			CHECK(memcmp(data, orig, sizeof(data)) == 0);
		}
	}
}

/* What the rx side saw, as text: "D<len>" per data piece with "F" when final,
 * "C<opcode>:<payload>" per control frame. Data bytes are collected apart. */
struct ws_rec {
	char log[4096];
	struct buf data;
	int messages;
	enum kube_err fail_with; /* returned by on_data once set */
};

/* A fresh frame parser and recorder; data holds up to cap bytes. */
static void ws_rec_init(struct kube_ws_rx *rx, struct ws_rec *r, size_t cap)
{
	memset(rx, 0, sizeof(*rx));
	memset(r, 0, sizeof(*r));
	buf_init(&r->data, cap);
}

static void ws_log(struct ws_rec *r, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void ws_log(struct ws_rec *r, const char *fmt, ...)
{
	size_t l = strlen(r->log);
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(r->log + l, sizeof(r->log) - l, fmt, ap);
	va_end(ap);
}

static enum kube_err ws_rec_data(void *ud, const unsigned char *p, size_t len, bool final)
{
	struct ws_rec *r = ud;
	if (r->fail_with != KUBE_OK)
		return r->fail_with;
	if (buf_append(&r->data, p, len) != 0)
		abort();
	if (final) {
		ws_log(r, "M%zu;", r->data.len);
		r->messages++;
	}
	return KUBE_OK;
}

static enum kube_err ws_rec_control(void *ud, unsigned opcode, const unsigned char *p,
				    size_t len)
{
	struct ws_rec *r = ud;
	ws_log(r, "C%u:%.*s;", opcode, (int)len, (const char *)p);
	return KUBE_OK;
}

static const struct kube_ws_rx_sink ws_rec_sink = { ws_rec_data, ws_rec_control };

static void put_frame(struct buf *b, bool fin, unsigned op, const void *p, size_t len)
{
	unsigned char hb[KUBE_WS_MAX_HEADER];
	size_t hl = kube_ws_frame_header(hb, fin, op, len, NULL);
	if (buf_append(b, hb, hl) || buf_append(b, p, len))
		abort();
}

/* A stream: a message in three fragments with a ping between them, a text
 * message, an empty binary message, a 70000-byte one (64-bit length), a
 * message ending in an empty continuation, a close. */
static void build_stream(struct buf *b, struct buf *want, char *want_log, size_t cap)
{
	static unsigned char big[70000];
	for (size_t i = 0; i < sizeof(big); i++)
		big[i] = (unsigned char)(i * 31 + 1);
	put_frame(b, false, KUBE_WS_OP_BINARY, "\x01he", 3);
	put_frame(b, true, KUBE_WS_OP_PING, "hi", 2);
	put_frame(b, false, KUBE_WS_OP_CONT, "ll", 2);
	put_frame(b, true, KUBE_WS_OP_CONT, "o", 1);
	put_frame(b, true, KUBE_WS_OP_TEXT, "\x02txt", 4);
	put_frame(b, true, KUBE_WS_OP_BINARY, "", 0);
	put_frame(b, true, KUBE_WS_OP_BINARY, big, sizeof(big));
	put_frame(b, false, KUBE_WS_OP_BINARY, "\x01x", 2);
	put_frame(b, true, KUBE_WS_OP_PONG, "", 0);
	put_frame(b, true, KUBE_WS_OP_CONT, "", 0);
	put_frame(b, true, KUBE_WS_OP_CLOSE, "\x03\xe8", 2);
	if (buf_append(want, "\x01hello\x02txt", 10) || buf_append(want, big, sizeof(big)) ||
	    buf_append(want, "\x01x", 2))
		abort();
	snprintf(want_log, cap, "C9:hi;M6;M10;M10;M%u;C10:;M%u;C8:\x03\xe8;", 10u + 70000u,
		 12u + 70000u);
}

static void test_ws_rx_stream(void)
{
	struct buf stream, want;
	char want_log[256];
	buf_init(&stream, 1 << 20);
	buf_init(&want, 1 << 20);
	build_stream(&stream, &want, want_log, sizeof(want_log));
	const unsigned char *p = (const unsigned char *)stream.data;
	size_t n = stream.len;

	/* whole, in two pieces cut anywhere in the first 200 bytes and around the
	 * big frame's header, and byte by byte */
	size_t cuts[400], ncuts = 0;
	for (size_t i = 0; i <= 200 && i <= n; i++)
		cuts[ncuts++] = i;
	for (size_t i = 0; i < 40; i++)
		cuts[ncuts++] = n - i;
	for (size_t k = 0; k <= ncuts; k++) {
		struct kube_ws_rx rx;
		struct ws_rec r;
		ws_rec_init(&rx, &r, 1 << 20);
		const char *why = NULL;
		if (k < ncuts) {
			size_t c = cuts[k];
			CHECK_INT(kube_ws_rx_feed(&rx, p, c, &ws_rec_sink, &r, &why), KUBE_OK);
			CHECK_INT(kube_ws_rx_feed(&rx, p + c, n - c, &ws_rec_sink, &r, &why),
				  KUBE_OK);
		} else {
			for (size_t i = 0; i < n; i++)
				CHECK_INT(kube_ws_rx_feed(&rx, p + i, 1, &ws_rec_sink, &r, &why),
					  KUBE_OK);
		}
		CHECK_STR(r.log, want_log);
		CHECK(r.data.len == want.len && memcmp(r.data.data, want.data, want.len) == 0);
		CHECK(!rx.in_frame && !rx.in_message && rx.hdr_have == 0);
		buf_release(&r.data);
	}
	buf_release(&stream);
	buf_release(&want);
}

static void test_ws_rx_refusals(void)
{
	static const struct {
		const char *bytes;
		size_t n;
	} bad[] = {
		{ "\x82\x81\x00\x00\x00\x00\x00", 7 },   /* masked */
		{ "\xc2\x01x", 3 },                       /* RSV1 */
		{ "\x89\x7e\x00\x7e", 4 },                /* ping of 126 bytes */
		{ "\x09\x00", 2 },                        /* fragmented ping */
		{ "\x80\x01x", 3 },                       /* stray continuation */
		{ "\x02\x01x\x82\x01y", 6 },              /* binary inside a message */
		{ "\x82\x7f\xff\xff\xff\xff\xff\xff\xff\xff", 10 }, /* 64-bit top bit */
		{ "\x82\x01x\x87\x00", 5 },               /* opcode 7 after a good frame */
	};
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		/* whole and byte by byte (a header split across every read) */
		for (int split = 0; split < 2; split++) {
			struct kube_ws_rx rx;
			struct ws_rec r;
			ws_rec_init(&rx, &r, 1 << 10);
			const char *why = NULL;
			enum kube_err rc = KUBE_OK;
			if (!split) {
				rc = kube_ws_rx_feed(&rx, bad[i].bytes, bad[i].n, &ws_rec_sink, &r,
						     &why);
			} else {
				for (size_t j = 0; j < bad[i].n && rc == KUBE_OK; j++)
					rc = kube_ws_rx_feed(&rx, bad[i].bytes + j, 1,
							     &ws_rec_sink, &r, &why);
			}
			CHECK_INT(rc, KUBE_ERR_PROTOCOL);
			CHECK(why && *why);
			CHECK(rx.hdr_have <= KUBE_WS_MAX_HEADER);
			buf_release(&r.data);
		}
	}
	/* a sink's error stops the feed and comes back as it is */
	struct kube_ws_rx rx;
	struct ws_rec r;
	ws_rec_init(&rx, &r, 1 << 10);
	r.fail_with = KUBE_ERR_TOO_LARGE;
	const char *why = NULL;
	CHECK_INT(kube_ws_rx_feed(&rx, "\x82\x02\x01x\x89\x00", 6, &ws_rec_sink, &r, &why),
		  KUBE_ERR_TOO_LARGE);
	CHECK_STR(r.log, "");
	buf_release(&r.data);
}

/* The demux behind the framing, as the client wires them: channels and the
 * status come out whatever the frame boundaries. */
static enum kube_err ws_to_demux(void *ud, const unsigned char *p, size_t len, bool final)
{
	void **pair = ud;
	return kube_exec_demux_feed(pair[0], p, len, final, &sink, pair[1]);
}

static enum kube_err ws_ignore_control(void *ud, unsigned opcode, const unsigned char *p,
				       size_t len)
{
	(void)ud;
	(void)opcode;
	(void)p;
	(void)len;
	return KUBE_OK;
}

static void test_ws_rx_demux(void)
{
	static const struct kube_ws_rx_sink to_demux = { ws_to_demux, ws_ignore_control };
	struct buf stream;
	buf_init(&stream, 1 << 16);
	put_frame(&stream, false, KUBE_WS_OP_BINARY, "\x01", 1); /* channel alone */
	put_frame(&stream, false, KUBE_WS_OP_CONT, "ab", 2);
	put_frame(&stream, true, KUBE_WS_OP_PING, "", 0);
	put_frame(&stream, true, KUBE_WS_OP_CONT, "c", 1);
	put_frame(&stream, true, KUBE_WS_OP_BINARY, "\x02" "e", 2);
	char st[sizeof(REC_SUCCESS)];
	st[0] = KUBE_EXEC_CH_STATUS;
	memcpy(st + 1, REC_SUCCESS, sizeof(REC_SUCCESS) - 1);
	put_frame(&stream, true, KUBE_WS_OP_BINARY, st, sizeof(st));
	for (size_t step = 1; step <= stream.len; step++) {
		struct kube_exec_demux d;
		struct sink_rec r;
		struct kube_ws_rx rx;
		kube_exec_demux_init(&d);
		rec_init(&r);
		memset(&rx, 0, sizeof(rx));
		void *pair[2] = { &d, &r };
		const char *why = NULL;
		for (size_t i = 0; i < stream.len; i += step) {
			size_t k = stream.len - i < step ? stream.len - i : step;
			CHECK_INT(kube_ws_rx_feed(&rx, stream.data + i, k, &to_demux, pair, &why),
				  KUBE_OK);
		}
		CHECK(r.out.len == 3 && memcmp(r.out.data, "abc", 3) == 0);
		CHECK(r.err.len == 1 && r.err.data[0] == 'e');
		CHECK_INT(r.statuses, 1);
		CHECK_STR(r.status, REC_SUCCESS);
		rec_release(&r);
		kube_exec_demux_release(&d);
	}
	buf_release(&stream);
}

static void test_ws_response(void)
{
	struct kube_ws_response r;
	static const char ok[] = "HTTP/1.1 101 Switching Protocols\r\n"
				 "upgrade: WebSocket\r\n"
				 "CONNECTION: keep-alive,  Upgrade \r\n"
				 "Sec-WebSocket-Accept:   s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n"
				 "Sec-Websocket-Protocol: v5.channel.k8s.io\r\n"
				 "\r\n";
	CHECK_INT(kube_ws_parse_response(ok, sizeof(ok) - 1, &r), 0);
	CHECK_INT(r.status, 101);
	CHECK(r.upgrade && r.connection);
	CHECK_STR(r.accept, "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=");
	CHECK_STR(r.protocol, "v5.channel.k8s.io");

	static const char refused[] = "HTTP/1.1 403 Forbidden\r\n"
				      "Content-Type: application/json\r\n"
				      "Content-Length: 250\r\n\r\n";
	CHECK_INT(kube_ws_parse_response(refused, sizeof(refused) - 1, &r), 0);
	CHECK_INT(r.status, 403);
	CHECK(!r.upgrade && !r.connection);
	CHECK_STR(r.accept, "");
	CHECK_STR(r.protocol, "");

	/* bare LF line ends, no reason phrase, a value too long to keep whole */
	char longv[200];
	memset(longv, 'a', sizeof(longv));
	char head[512];
	int hl = snprintf(head, sizeof(head),
			  "HTTP/1.0 101\nUpgrade: websocket\nConnection: upgradex\n"
			  "Sec-WebSocket-Protocol: %.*s\n\n",
			  (int)sizeof(longv), longv);
	CHECK_INT(kube_ws_parse_response(head, (size_t)hl, &r), 0);
	CHECK_INT(r.status, 101);
	CHECK(r.upgrade);
	CHECK(!r.connection); /* "upgradex" is not the token */
	CHECK_INT(strlen(r.protocol), sizeof(r.protocol) - 1);

	static const char *const bad[] = {
		"HTTP/2 101 x\r\n\r\n", "HTTP/1.1 1o1 x\r\n\r\n", "HTTP/1.1 1010\r\n\r\n",
		"SSH-2.0-OpenSSH\r\n\r\n", "HTTP/1.1 101 x\r\nno colon here\r\n\r\n", "",
	};
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
		CHECK_INT(kube_ws_parse_response(bad[i], strlen(bad[i]), &r), -EINVAL);
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
	RUN(test_ws_accept);
	RUN(test_ws_parse_header);
	RUN(test_ws_frame_header);
	RUN(test_ws_rx_stream);
	RUN(test_ws_rx_refusals);
	RUN(test_ws_rx_demux);
	RUN(test_ws_response);
	RUN(test_client_args);
	return test_summary();
}
