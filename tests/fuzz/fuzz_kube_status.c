/* libFuzzer target: decoding of API server error bodies. */
#include "kube_status.h"

#include <stdint.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct kube_error err;
	kube_status_decode(size ? 400 + data[0] : 500, (const char *)data, size, NULL, &err);
	if (strlen(err.message) >= sizeof(err.message) || err.ncauses > KUBE_MAX_CAUSES)
		__builtin_trap();
	cJSON *j = cJSON_ParseWithLength((const char *)data, size);
	kube_status_from_json(j, &err);
	cJSON_Delete(j);
	return 0;
}
