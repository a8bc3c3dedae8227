/*
 * cluster_env: integration tests' view of the test control plane.
 */
#include "cluster_env.h"

#include "util.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>

#define MAX_VARS 64

static char *keys[MAX_VARS], *vals[MAX_VARS];
static int nvars;

void cluster_env_load(void)
{
	const char *path = getenv("SBX_CLUSTER_ENV");
	if (!path) {
		fprintf(stderr, "SBX_CLUSTER_ENV is not set: run through ctest (the cluster fixture)\n");
		exit(2);
	}
	FILE *f = fopen(path, "r");
	if (!f) {
		perror(path);
		exit(2);
	}
	char line[8192];
	while (fgets(line, sizeof(line), f) && nvars < MAX_VARS) {
		line[strcspn(line, "\r\n")] = '\0';
		char *eq = strchr(line, '=');
		if (!eq || line[0] == '#')
			continue;
		*eq = '\0';
		keys[nvars] = strdup(line);
		vals[nvars] = strdup(eq + 1);
		nvars++;
	}
	fclose(f);
	const char *v = cluster_env("CONTROL_PLANE_VERSIONS");
	printf("%s\n", v ? v : "control plane: (versions unknown)");
	fflush(stdout);
}

const char *cluster_env(const char *key)
{
	for (int i = 0; i < nvars; i++)
		if (strcmp(keys[i], key) == 0)
			return vals[i];
	return NULL;
}

struct kube_client *cluster_admin_client(void)
{
	char err[512];
	struct kube_config *cfg = NULL;
	const char *kc = cluster_env("KUBECONFIG");
	if (!kc || kube_config_load_file(kc, NULL, &cfg, err, sizeof(err)) != 0) {
		fprintf(stderr, "cannot load the cluster kubeconfig: %s\n", kc ? err : "not in env");
		exit(2);
	}
	struct kube_client *c = kube_client_new(cfg, NULL, err, sizeof(err));
	kube_config_free(cfg);
	if (!c) {
		fprintf(stderr, "kube_client_new: %s\n", err);
		exit(2);
	}
	return c;
}

int cluster_py(const char *args)
{
	char cmd[2048];
	snprintf(cmd, sizeof(cmd), "python3 '%s' %s --dir '%s'", cluster_env("CLUSTER_PY"), args,
		 cluster_env("CLUSTER_DIR"));
	int rc = system(cmd);
	return rc == -1 ? -1 : WEXITSTATUS(rc);
}

const char *cluster_new_namespace(struct kube_client *c, const char *prefix)
{
	static char name[64];
	unsigned char r[4];
	if (random_bytes(r, sizeof(r)) != 0)
		exit(2);
	snprintf(name, sizeof(name), "%s-%02x%02x%02x%02x", prefix, r[0], r[1], r[2], r[3]);
	cJSON *ns = cJSON_CreateObject();
	cJSON_AddStringToObject(cJSON_AddObjectToObject(ns, "metadata"), "name", name);
	struct kube_error err;
	enum kube_err rc = kube_create(c, &KUBE_RES_NAMESPACES, NULL, ns, NULL, &err);
	cJSON_Delete(ns);
	if (rc) {
		fprintf(stderr, "cannot create namespace %s: %s: %s\n", name, kube_strerror(rc),
			err.message);
		exit(2);
	}
	return name;
}

int cluster_compact_etcd(void)
{
	struct kube_config cfg = { .server = (char *)cluster_env("ETCD_URL") };
	char err[256];
	if (!cfg.server)
		return -1;
	struct kube_client *c = kube_client_new(&cfg, NULL, err, sizeof(err));
	if (!c)
		return -1;
	int rc = -1;
	cJSON *range = NULL;
	struct kube_error e;
	const char *q = "{\"key\":\"AA==\"}";
	if (kube_request(c, "POST", "/v3/kv/range", "application/json", q, strlen(q), true,
			 &range, &e) == KUBE_OK) {
		const cJSON *h = cJSON_GetObjectItemCaseSensitive(range, "header");
		const cJSON *rev = cJSON_GetObjectItemCaseSensitive(h, "revision");
		char body[128];
		if (cJSON_IsString(rev)) {
			snprintf(body, sizeof(body), "{\"revision\":\"%s\",\"physical\":true}",
				 rev->valuestring);
			if (kube_request(c, "POST", "/v3/kv/compaction", "application/json", body,
					 strlen(body), false, NULL, &e) == KUBE_OK)
				rc = 0;
		}
	}
	if (rc)
		fprintf(stderr, "etcd compaction failed: %s\n", e.message);
	cJSON_Delete(range);
	kube_client_free(c);
	return rc;
}
