/* libFuzzer target: kubeconfig parsing of arbitrary bytes. */
#include "kube_config.h"

#include <stdint.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct kube_config *cfg = NULL;
	char err[256];
	/* base_dir points nowhere useful: file references fail cleanly */
	if (kube_config_load_buffer((const char *)data, size, "/nonexistent", NULL, &cfg, err,
				    sizeof(err)) == 0)
		kube_config_free(cfg);
	return 0;
}
