/*
 * sandbox-controller: the daemon's entry point and wiring.
 *
 * Threads: the HTTP server's loop (this thread); the Pod informer feeding the
 * sandbox cache; the reconciler; a pool of workers for Kubernetes writes.
 * Signals: the first SIGINT/SIGTERM drains (readyz 503, new calls 503, calls in
 * flight finish, at most 25 s), then stops; a second one exits at once.
 */
#include "audit.h"
#include "auth.h"
#include "client_addr.h"
#include "config.h"
#include "exec_api.h"
#include "files_api.h"
#include "http_server.h"
#include "kube_client.h"
#include "kube_config.h"
#include "kube_exec.h"
#include "kube_watch.h"
#include "log.h"
#include "ratelimit.h"
#include "reconciler.h"
#include "sandbox_api.h"
#include "sandbox_spec.h"
#include "sandbox_store.h"
#include "util.h"
#include "version.h"
#include "workq.h"

#include <malloc.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* Workers block on the API server, not on CPU: enough of them that a burst
 * of creates is limited by the API server, not by this pool. */
#define WORKERS 32

/* What GET /v1/sandboxes/{id}/exec speaks, most preferred first. */
static const char *const exec_protocols[] = { KUBE_EXEC_PROTOCOL_V5, KUBE_EXEC_PROTOCOL_V4,
					       NULL };
#define WORK_QUEUE 1024

#define DRAIN_MAX_MS 25000

static volatile sig_atomic_t signals_seen;
static volatile sig_atomic_t hup_seen;
static volatile int stop_flag;
static struct http_server *server;
static struct sandbox_api_security sec;
static struct sandbox_store *store;

static void on_signal(int sig)
{
	if (sig == SIGHUP) {
		hup_seen = 1;
		return;
	}
	if (++signals_seen >= 2)
		_exit(130);
	/* the housekeeping thread does the work */
}

/* Reload credentials when their files change (checked every second) or on
 * SIGHUP (which also reopens the audit file, for log rotation). On the first
 * SIGINT/SIGTERM: refuse new work, let calls in flight finish (at most
 * DRAIN_MAX_MS), then stop the loops. */
static void *housekeeping_thread(void *ud)
{
	struct sandbox_api *api = ud;
	int64_t next_reload = 0, next_trim = 0;
	while (!signals_seen && !stop_flag) {
		if (hup_seen) {
			hup_seen = 0;
			log_info("SIGHUP: reloading credentials and the TLS certificate, reopening the audit log");
			(void)auth_reload(sec.auth, true);
			http_server_reload_tls(server);
			if (audit_reopen(sec.audit) != 0)
				log_warn("cannot reopen the audit log");
		} else if (now_ms() >= next_reload) {
			(void)auth_reload(sec.auth, false);
			next_reload = now_ms() + 1000;
			/* hand memory freed after a burst back to the system */
			if (now_ms() >= next_trim) {
				malloc_trim(0);
				next_trim = now_ms() + 10000;
			}
		}
		sleep_ms_interruptible(100, &stop_flag);
	}
	if (stop_flag)
		return NULL;
	sandbox_api_drain(api);
	log_info("draining: %d calls in flight", sandbox_api_inflight(api));
	int64_t deadline = now_ms() + DRAIN_MAX_MS;
	while (sandbox_api_inflight(api) > 0 && now_ms() < deadline)
		sleep_ms_interruptible(50, NULL);
	if (sandbox_api_inflight(api) > 0)
		log_warn("stopping with %d calls still in flight", sandbox_api_inflight(api));
	stop_flag = 1;
	http_server_wake(server);
	return NULL;
}

/* The reconciler deleted an expired sandbox: say so in the audit log. */
static void audit_expired(void *ud, const char *id)
{
	(void)ud;
	struct sandbox sb;
	bool known = sandbox_store_get(store, id, &sb) == 0;
	struct audit_event e = {
		.principal_id = "reconciler",
		.principal_kind = "system",
		.tenant = known ? sb.tenant : NULL,
		.action = AUDIT_SANDBOX_EXPIRE,
		.sandbox_id = id,
		.outcome = AUDIT_SUCCESS,
	};
	audit_record(sec.audit, &e);
	if (known)
		sandbox_release(&sb);
}

/* Build the limiters, client address rules, audit log and authentication
 * from cfg. 0, or -1 with the reason logged. */
static int security_new(const struct sbx_config *cfg)
{
	char err[512];
	sec.auth = auth_new(&cfg->auth, err, sizeof(err));
	if (!sec.auth) {
		log_error("authentication: %s", err);
		return -1;
	}
	if (cfg->rate_enabled) {
		sec.per_principal = ratelimit_new(cfg->rate_principal, cfg->rate_principal_burst,
						  cfg->rate_max_keys);
		sec.per_address = ratelimit_new(cfg->rate_address, cfg->rate_address_burst,
						cfg->rate_max_keys);
		if (!sec.per_principal || !sec.per_address) {
			log_error("cannot create the rate limiters");
			return -1;
		}
	} else {
		log_warn("rate limits are OFF (limits.rate.enabled: false)");
	}
	sec.audit_sampler = ratelimit_new(1, 1, cfg->rate_max_keys);
	sec.client_addr = client_addr_new((const char *const *)cfg->trusted_proxies,
					  cfg->ntrusted_proxies, err, sizeof(err));
	if (!sec.client_addr || !sec.audit_sampler) {
		log_error("%s", sec.client_addr ? "out of memory" : err);
		return -1;
	}
	struct audit_opts ao = { .destination = cfg->audit_destination,
				 .argv_mode = (enum audit_argv_mode)cfg->audit_argv };
	sec.audit = audit_new(&ao, err, sizeof(err));
	if (!sec.audit) {
		log_error("audit log: %s", err);
		return -1;
	}
	return 0;
}

static void security_free(void)
{
	auth_free(sec.auth);
	ratelimit_free(sec.per_principal);
	ratelimit_free(sec.per_address);
	ratelimit_free(sec.audit_sampler);
	client_addr_free(sec.client_addr);
	audit_free(sec.audit);
	memset(&sec, 0, sizeof(sec));
}

static void usage(FILE *f)
{
	fprintf(f,
		"usage: sandbox-controller [--config FILE] [options]\n"
		"       sandbox-controller keygen --tenant T --scopes a,b [--expires 30d] [--id ID]\n"
		"  --config FILE       YAML configuration (or $SBX_CONFIG); see docs/configuration.md\n"
		"  --namespace NS      sandbox namespace (SBX_NAMESPACE)\n"
		"  --listen ADDR       listen address (SBX_LISTEN_ADDRESS)\n"
		"  --port N            listen port (SBX_PORT)\n"
		"  --kubeconfig PATH   kubeconfig (SBX_KUBECONFIG; default: $KUBECONFIG, in-cluster,\n"
		"                      ~/.kube/config)\n"
		"  --context NAME      kubeconfig context (SBX_KUBE_CONTEXT)\n"
		"  --log-level LEVEL   debug, info, warn, error (SBX_LOG_LEVEL)\n"
		"  --log-format FMT    json or text (SBX_LOG_FORMAT)\n"
		"  --check             load the configuration, connect to the API server, and exit\n"
		"  --check-config      validate the configuration (and that credentials are set), and exit\n"
		"  --version           print the version and exit\n"
		"  --help              this text\n");
}

static void *informer_thread(void *ud)
{
	kube_informer_run(ud, &stop_flag);
	return NULL;
}

static void *reconciler_thread(void *ud)
{
	reconciler_run(ud, &stop_flag);
	return NULL;
}

static int ensure_policies(void *ud)
{
	return sandbox_api_ensure_network_policies(ud);
}

/* Remove --check from argv (config_load does not know it). */
static bool take_flag(int *argc, char **argv, const char *flag)
{
	bool found = false;
	int w = 0;
	for (int i = 0; i < *argc; i++) {
		if (i > 0 && strcmp(argv[i], flag) == 0) {
			found = true;
			continue;
		}
		argv[w++] = argv[i];
	}
	*argc = w;
	argv[w] = NULL;
	return found;
}

int main(int argc, char **argv)
{
	/* 32 workers would otherwise get up to 16 malloc arenas (8 per core),
	 * each keeping freed memory: a few arenas keep the resident set small */
	mallopt(M_ARENA_MAX, 2);
	if (argc > 1 && strcmp(argv[1], "keygen") == 0)
		return auth_keygen_main(argc - 1, argv + 1);
	for (int i = 1; i < argc; i++) {
		if (strcmp(argv[i], "--help") == 0 || strcmp(argv[i], "-h") == 0) {
			usage(stdout);
			return 0;
		}
		if (strcmp(argv[i], "--version") == 0) {
			printf("sandbox-controller %s\n", SBX_VERSION);
			return 0;
		}
	}
	bool check_only = take_flag(&argc, argv, "--check");
	bool check_config = take_flag(&argc, argv, "--check-config");
	char err[512];
	struct sbx_config *cfg = NULL;
	if (config_load(getenv("SBX_CONFIG"), argc, argv, &cfg, err, sizeof(err)) != 0) {
		fprintf(stderr, "sandbox-controller: %s\n", err);
		return 2;
	}
	log_setup((enum log_level)log_level_parse(cfg->log_level),
		  strcmp(cfg->log_format, "text") == 0 ? LOG_FORMAT_TEXT : LOG_FORMAT_JSON);
	/* secure by default: no credentials configured, no start */
	if (config_check_credentials(cfg, err, sizeof(err)) != 0) {
		fprintf(stderr, "sandbox-controller: %s\n", err);
		config_free(cfg);
		return 2;
	}
	if (check_config) {
		printf("configuration OK: %zu templates, namespace \"%s\"\n", cfg->ntemplates,
		       cfg->namespace);
		config_free(cfg);
		return 0;
	}

	struct sigaction sa = { .sa_handler = on_signal };
	sigemptyset(&sa.sa_mask);
	sigaction(SIGINT, &sa, NULL);
	sigaction(SIGTERM, &sa, NULL);
	sigaction(SIGHUP, &sa, NULL);
	signal(SIGPIPE, SIG_IGN);

	int status = 1;
	struct kube_config *kcfg = NULL;
	struct kube_client *kube = NULL;
	struct kube_informer *inf = NULL;
	struct workq *wq = NULL;
	struct sandbox_api *api = NULL;
	struct kube_exec_client *kx = NULL;
	struct exec_mgr *xm = NULL;
	struct reconciler *rec = NULL;
	pthread_t inf_th, rec_th, drain_th;
	bool inf_started = false, rec_started = false, drain_started = false;

	if (kube_config_load_default(cfg->kubeconfig, cfg->kube_context, &kcfg, err,
				     sizeof(err)) != 0) {
		log_error("cannot load the Kubernetes configuration: %s", err);
		goto out;
	}
	kube = kube_client_new(kcfg, NULL, err, sizeof(err));
	if (!kube) {
		log_error("cannot create the Kubernetes client: %s", err);
		goto out;
	}
	log_info("sandbox-controller %s starting: API server %s (%s), namespace \"%s\", %zu templates",
		 SBX_VERSION, kube_client_server(kube), kcfg->source, cfg->namespace,
		 cfg->ntemplates);
	cJSON *ver = NULL;
	struct kube_error ke;
	enum kube_err krc = kube_request(kube, "GET", "/version", NULL, NULL, 0, true, &ver, &ke);
	if (krc == KUBE_OK) {
		const cJSON *gv = cJSON_GetObjectItemCaseSensitive(ver, "gitVersion");
		log_info("connected to kube-apiserver %s",
			 cJSON_IsString(gv) ? gv->valuestring : "(unknown version)");
	} else {
		log_warn("the API server does not answer yet (%s: %s); retrying in the background",
			 kube_strerror(krc), ke.message);
	}
	cJSON_Delete(ver);
	if (check_only) {
		status = krc == KUBE_OK ? 0 : 1;
		goto out;
	}

	if (security_new(cfg) != 0)
		goto out;
	store = sandbox_store_new();
	struct kube_informer_opts io = {
		.resource = &KUBE_RES_PODS,
		.ns = cfg->namespace,
		.label_selector = SBX_SELECTOR,
	};
	struct kube_informer_ops ops = { .on_event = sandbox_store_on_event,
					 .on_synced = sandbox_store_on_synced };
	inf = store ? kube_informer_new(kube, &io, &ops, store) : NULL;
	wq = workq_new(WORKERS, WORK_QUEUE);
	api = inf && wq ? sandbox_api_new(cfg, kube, store, wq, inf, &sec) : NULL;
	kx = kube_exec_client_new(kcfg, err, sizeof(err));
	if (!kx) {
		log_error("cannot create the exec client: %s", err);
		goto out;
	}
	xm = api ? exec_mgr_new(cfg, kx) : NULL;
	if (xm)
		sandbox_api_set_exec(api, xm);
	struct reconciler_opts ro = {
		.cfg = cfg,
		.kube = kube,
		.store = store,
		.ensure_policies = ensure_policies,
		.ensure_ud = api,
		.on_expired = audit_expired,
	};
	rec = api ? reconciler_new(&ro) : NULL;
	if (!rec) {
		log_error("out of memory");
		goto out;
	}
	struct http_server_opts ho = {
		.bind_address = cfg->listen_address,
		.port = cfg->port,
		.max_body = cfg->max_body_bytes,
		.tls_cert_file = cfg->tls_cert_file,
		.tls_key_file = cfg->tls_key_file,
		.tls_client_ca_file = cfg->tls_client_ca_file,
		.on_reply = sandbox_api_on_reply,
		.ws_protocols = exec_protocols,
		.stream_body = files_api_stream_body, /* uploads stream into the sandbox */
		.ws_max_message = 1u << 20,
	};
	server = http_server_new(&ho, sandbox_api_handle, api, err, sizeof(err));
	if (!server) {
		log_error("cannot start the HTTP server on %s:%d: %s", cfg->listen_address, cfg->port,
			  err);
		goto out;
	}
	inf_started = pthread_create(&inf_th, NULL, informer_thread, inf) == 0;
	rec_started = pthread_create(&rec_th, NULL, reconciler_thread, rec) == 0;
	drain_started = pthread_create(&drain_th, NULL, housekeeping_thread, api) == 0;
	if (!inf_started || !rec_started || !drain_started) {
		log_error("cannot start threads");
		stop_flag = 1;
		goto out;
	}
	log_info("listening on %s://%s:%d", cfg->tls_cert_file ? "https" : "http",
		 cfg->listen_address, http_server_port(server));
	http_server_run(server, &stop_flag);
	log_info("stopping: draining work in flight");
	status = 0;
out:
	stop_flag = 1;
	if (drain_started)
		pthread_join(drain_th, NULL);
	if (inf_started)
		pthread_join(inf_th, NULL);
	if (rec_started)
		pthread_join(rec_th, NULL);
	if (api)
		sandbox_api_shutdown(api);
	exec_mgr_free(xm);        /* answers exec calls, kills timed-out commands */
	kube_exec_client_free(kx);
	workq_free(wq);           /* runs what was queued; may add waiters */
	sandbox_store_free(store); /* answers the waiters left */
	http_server_free(server);
	reconciler_free(rec);
	sandbox_api_free(api);
	security_free();
	kube_informer_free(inf);
	kube_client_free(kube);
	kube_config_free(kcfg);
	config_free(cfg);
	log_info("stopped");
	return status;
}
