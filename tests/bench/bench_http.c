/*
 * bench_http: throughput and latency of api/http_server alone, with no
 * Kubernetes behind it. The server (in this process, one service thread)
 * answers every GET with a ~300-byte JSON object built per request from a
 * cached record, the way a cache read will; wrk drives it with keep-alive.
 *
 * Usage: bench_http [seconds [connections [wrk threads]]]   (10 32 2)
 *        bench_http --serve PORT    (just serve, for running wrk by hand)
 * Prints wrk's report, then one summary line and the server's resident
 * memory (VmRSS/VmHWM of this process, which is the server). Not a pass/fail
 * test: the figures go into docs/benchmarks.md.
 */
#include "http_server.h"
#include "log.h"
#include "util.h"

#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

/* the "cache": one sandbox record */
static const struct {
	const char *id, *template_name, *state, *created_at, *expires_at;
} rec = {
	"sb-7f3a9c2e41d84b6f9a0c", "python-3.12", "ready",
	"2025-05-20T10:11:12Z", "2025-05-20T11:11:12Z",
};

static void handler(void *ud, struct http_request *req)
{
	(void)ud;
	if (strcmp(http_request_method(req), "GET") != 0) {
		http_reply_error(req, 405, "method_not_allowed", NULL, 0, "GET only");
		return;
	}
	cJSON *o = cJSON_CreateObject();
	cJSON_AddStringToObject(o, "id", rec.id);
	cJSON_AddStringToObject(o, "template", rec.template_name);
	cJSON_AddStringToObject(o, "state", rec.state);
	cJSON_AddStringToObject(o, "created_at", rec.created_at);
	cJSON_AddStringToObject(o, "expires_at", rec.expires_at);
	cJSON *labels = cJSON_AddObjectToObject(o, "labels");
	cJSON_AddStringToObject(labels, "team", "research");
	cJSON_AddStringToObject(labels, "purpose", "benchmark");
	cJSON_AddStringToObject(labels, "owner", "ci-runner-17");
	cJSON_AddStringToObject(o, "message", "sandbox is ready to accept exec requests");
	cJSON_AddNumberToObject(o, "timeout_seconds", 3600);
	cJSON_AddStringToObject(o, "request_id", http_request_id(req));
	http_reply_json(req, 200, o, NULL, 0);
}

static volatile int stop;
static struct http_server *srv;

static void *serve(void *arg)
{
	(void)arg;
	http_server_run(srv, &stop);
	return NULL;
}

static long status_kb(const char *field)
{
	FILE *f = fopen("/proc/self/status", "r");
	char line[256];
	long v = -1;
	size_t n = strlen(field);
	while (f && fgets(line, sizeof(line), f)) {
		if (strncmp(line, field, n) == 0 && line[n] == ':')
			v = atol(line + n + 1);
	}
	if (f)
		fclose(f);
	return v;
}

static void on_signal(int sig)
{
	(void)sig;
	stop = 1;
}

/* Run wrk, echoing its output into out. */
static int run_wrk(const char *const argv[], char *out, size_t cap)
{
	int p[2];
	if (pipe(p) != 0)
		return -1;
	pid_t pid = fork();
	if (pid < 0)
		return -1;
	if (pid == 0) {
		dup2(p[1], 1);
		close(p[0]);
		close(p[1]);
		execvp(argv[0], (char *const *)argv);
		fprintf(stderr, "cannot run %s: %s (apt-get install -y wrk)\n", argv[0],
			strerror(errno));
		_exit(127);
	}
	close(p[1]);
	size_t len = 0;
	ssize_t r;
	while ((r = read(p[0], out + len, cap - 1 - len)) > 0) {
		fwrite(out + len, 1, (size_t)r, stdout);
		len += (size_t)r;
		if (len == cap - 1)
			break;
	}
	out[len] = '\0';
	close(p[0]);
	int st = 0;
	waitpid(pid, &st, 0);
	return WIFEXITED(st) ? WEXITSTATUS(st) : -1;
}

/* "     99%    1.23ms" in wrk's latency distribution -> milliseconds */
static double latency_ms(const char *out, const char *pct)
{
	const char *p = strstr(out, "Latency Distribution");
	if (p)
		p = strstr(p, pct);
	if (!p)
		return -1;
	char *end;
	double v = strtod(p + strlen(pct), &end);
	if (strncmp(end, "us", 2) == 0)
		return v / 1000;
	if (strncmp(end, "ms", 2) == 0)
		return v;
	if (strncmp(end, "s", 1) == 0)
		return v * 1000;
	return -1;
}

int main(int argc, char **argv)
{
	log_setup(LOG_WARN, LOG_FORMAT_TEXT);
	bool serve_only = argc > 2 && strcmp(argv[1], "--serve") == 0;
	struct http_server_opts o = {
		.bind_address = "127.0.0.1",
		.port = serve_only ? atoi(argv[2]) : 0,
	};
	char err[256];
	srv = http_server_new(&o, handler, NULL, err, sizeof(err));
	if (!srv) {
		fprintf(stderr, "%s\n", err);
		return 1;
	}
	long rss_idle = status_kb("VmRSS");
	signal(SIGINT, on_signal);
	signal(SIGTERM, on_signal);
	if (serve_only) {
		printf("serving on 127.0.0.1:%d (pid %d), VmRSS %ld kB\n",
		       http_server_port(srv), (int)getpid(), rss_idle);
		fflush(stdout);
		http_server_run(srv, &stop);
		http_server_free(srv);
		return 0;
	}

	const char *secs = argc > 1 ? argv[1] : "10";
	const char *conns = argc > 2 ? argv[2] : "32";
	const char *threads = argc > 3 ? argv[3] : "2";
	pthread_t th;
	pthread_create(&th, NULL, serve, NULL);

	char url[128], dur[32], c[32], t[32];
	snprintf(url, sizeof(url), "http://127.0.0.1:%d/v1/sandboxes/%s",
		 http_server_port(srv), rec.id);
	snprintf(dur, sizeof(dur), "%ss", secs);
	snprintf(c, sizeof(c), "-c%s", conns);
	snprintf(t, sizeof(t), "-t%s", threads);
	/* warm up (connections, allocator) without recording */
	const char *warm[] = { "wrk", t, c, "-d2s", url, NULL };
	static char out[65536];
	if (run_wrk(warm, out, sizeof(out)) != 0) {
		stop = 1;
		http_server_wake(srv);
		pthread_join(th, NULL);
		http_server_free(srv);
		return 1;
	}
	printf("---- measured run ----\n");
	const char *args[] = { "wrk", t, c, "-d", dur, "--latency", url, NULL };
	int rc = run_wrk(args, out, sizeof(out));
	long rss_load = status_kb("VmRSS"), hwm = status_kb("VmHWM");

	struct http_server_stats st;
	http_server_get_stats(srv, &st);
	stop = 1;
	http_server_wake(srv);
	pthread_join(th, NULL);
	http_server_free(srv);

	char rps[32] = "?";
	const char *r = strstr(out, "Requests/sec:");
	if (r)
		sscanf(r + 13, "%31s", rps);
	printf("\nsummary: %s req/s, p50 %.3f ms, p90 %.3f ms, p99 %.3f ms; "
	       "server VmRSS idle %ld kB, after load %ld kB, peak %ld kB; "
	       "server saw %llu connections, %llu requests, %llu rejected\n",
	       rps, latency_ms(out, "50%"),
	       latency_ms(out, "90%"), latency_ms(out, "99%"), rss_idle, rss_load, hwm,
	       (unsigned long long)st.connections, (unsigned long long)st.requests,
	       (unsigned long long)st.rejected);
	return rc;
}
