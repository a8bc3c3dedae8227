/*
 * sandbox-controller: the daemon's entry point.
 *
 * For now it loads the Kubernetes configuration, connects to the API server,
 * reports its version, and keeps an informer on the sandbox Pods of its
 * namespace until SIGINT/SIGTERM (first signal: drain and stop; second: exit
 * at once). The HTTP API arrives with the lifecycle issue.
 */
#include "kube_client.h"
#include "kube_config.h"
#include "kube_watch.h"
#include "log.h"
#include "util.h"
#include "version.h"

#include <getopt.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define SANDBOX_SELECTOR "app.kubernetes.io/managed-by=sandbox-controller"

static volatile sig_atomic_t signals_seen;
static volatile int stop_flag;

static void on_signal(int sig)
{
	(void)sig;
	if (++signals_seen >= 2)
		_exit(130);
	stop_flag = 1;
}

static void usage(FILE *f)
{
	fprintf(f,
		"usage: sandbox-controller [options]\n"
		"  --kubeconfig PATH   kubeconfig file (default: $KUBECONFIG, in-cluster, ~/.kube/config)\n"
		"  --context NAME      kubeconfig context (default: current-context)\n"
		"  --namespace NS      sandbox namespace (default: the context's, else \"sandboxes\")\n"
		"  --check             connect, print the API server version, and exit\n"
		"  --log-level LEVEL   debug, info, warn, error (default info)\n"
		"  --log-format FMT    json or text (default json)\n"
		"  --version           print the version and exit\n"
		"  --help              this text\n");
}

struct counts {
	long pods;
};

static void on_pod_event(void *ud, enum kube_event_type type, const cJSON *obj)
{
	struct counts *c = ud;
	const cJSON *m = cJSON_GetObjectItemCaseSensitive(obj, "metadata");
	const cJSON *name = cJSON_GetObjectItemCaseSensitive(m, "name");
	if (type == KUBE_EVENT_ADDED)
		c->pods++;
	else if (type == KUBE_EVENT_DELETED)
		c->pods--;
	log_info("sandbox pod \"%s\" %s", cJSON_IsString(name) ? name->valuestring : "?",
		 kube_event_type_name(type));
}

static void on_pods_synced(void *ud)
{
	struct counts *c = ud;
	log_info("pod cache synced: %ld sandbox pods", c->pods);
}

/* GET /version; logs and returns 0 when the API server answers. */
static int check_server(struct kube_client *client, char *ver, size_t verlen)
{
	cJSON *v = NULL;
	struct kube_error err;
	enum kube_err rc = kube_request(client, "GET", "/version", NULL, NULL, 0, true, &v, &err);
	if (rc) {
		log_error("cannot reach the API server %s: %s: %s", kube_client_server(client),
			  kube_strerror(rc), err.message);
		return -1;
	}
	const cJSON *gv = cJSON_GetObjectItemCaseSensitive(v, "gitVersion");
	snprintf(ver, verlen, "%s", cJSON_IsString(gv) ? gv->valuestring : "unknown");
	cJSON_Delete(v);
	return 0;
}

int main(int argc, char **argv)
{
	const char *kubeconfig = NULL, *context = NULL, *ns = NULL;
	bool check_only = false;
	enum log_level level = LOG_INFO;
	enum log_format fmt = LOG_FORMAT_JSON;
	static const struct option longopts[] = {
		{ "kubeconfig", required_argument, NULL, 'k' },
		{ "context", required_argument, NULL, 'c' },
		{ "namespace", required_argument, NULL, 'n' },
		{ "check", no_argument, NULL, 'C' },
		{ "log-level", required_argument, NULL, 'l' },
		{ "log-format", required_argument, NULL, 'f' },
		{ "version", no_argument, NULL, 'V' },
		{ "help", no_argument, NULL, 'h' },
		{ NULL, 0, NULL, 0 },
	};
	int opt;
	while ((opt = getopt_long(argc, argv, "", longopts, NULL)) != -1) {
		switch (opt) {
		case 'k':
			kubeconfig = optarg;
			break;
		case 'c':
			context = optarg;
			break;
		case 'n':
			ns = optarg;
			break;
		case 'C':
			check_only = true;
			break;
		case 'l': {
			int l = log_level_parse(optarg);
			if (l < 0) {
				fprintf(stderr, "sandbox-controller: --log-level: unknown level \"%s\"\n",
					optarg);
				return 2;
			}
			level = (enum log_level)l;
			break;
		}
		case 'f':
			if (strcmp(optarg, "json") == 0) {
				fmt = LOG_FORMAT_JSON;
			} else if (strcmp(optarg, "text") == 0) {
				fmt = LOG_FORMAT_TEXT;
			} else {
				fprintf(stderr, "sandbox-controller: --log-format: expected json or text\n");
				return 2;
			}
			break;
		case 'V':
			printf("sandbox-controller %s\n", SBX_VERSION);
			return 0;
		case 'h':
			usage(stdout);
			return 0;
		default:
			usage(stderr);
			return 2;
		}
	}
	if (optind < argc) {
		fprintf(stderr, "sandbox-controller: unexpected argument \"%s\"\n", argv[optind]);
		usage(stderr);
		return 2;
	}
	log_setup(level, fmt);

	struct sigaction sa = { .sa_handler = on_signal };
	sigemptyset(&sa.sa_mask);
	sigaction(SIGINT, &sa, NULL);
	sigaction(SIGTERM, &sa, NULL);
	signal(SIGPIPE, SIG_IGN);

	char err[512];
	struct kube_config *cfg = NULL;
	if (kube_config_load_default(kubeconfig, context, &cfg, err, sizeof(err)) != 0) {
		log_error("cannot load the Kubernetes configuration: %s", err);
		return 1;
	}
	struct kube_client *client = kube_client_new(cfg, NULL, err, sizeof(err));
	if (!client) {
		log_error("cannot create the Kubernetes client: %s", err);
		kube_config_free(cfg);
		return 1;
	}
	if (!ns)
		ns = cfg->namespace ? cfg->namespace : "sandboxes";
	log_info("sandbox-controller %s starting; API server %s (%s), namespace \"%s\"",
		 SBX_VERSION, kube_client_server(client), cfg->source, ns);

	int status = 1;
	char ver[64];
	if (check_server(client, ver, sizeof(ver)) != 0)
		goto out;
	log_info("connected to kube-apiserver %s", ver);
	if (check_only) {
		printf("kube-apiserver %s at %s\n", ver, kube_client_server(client));
		status = 0;
		goto out;
	}

	struct counts counts = { 0 };
	struct kube_informer_opts io = {
		.resource = &KUBE_RES_PODS,
		.ns = ns,
		.label_selector = SANDBOX_SELECTOR,
	};
	struct kube_informer_ops ops = { .on_event = on_pod_event, .on_synced = on_pods_synced };
	struct kube_informer *inf = kube_informer_new(client, &io, &ops, &counts);
	if (!inf) {
		log_error("out of memory");
		goto out;
	}
	kube_informer_run(inf, &stop_flag);
	kube_informer_free(inf);
	log_info("stopped");
	status = 0;
out:
	kube_client_free(client);
	kube_config_free(cfg);
	return status;
}
