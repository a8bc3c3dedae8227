/* libFuzzer target: the watch event decoder, fed in two uneven pieces with a
 * small event bound. */
#include "kube_watch.h"

#include <stdint.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static int on_event(void *ud, enum kube_event_type type, const cJSON *obj)
{
	(void)type;
	(void)obj;
	++*(size_t *)ud;
	return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct kube_watch_decoder d;
	struct kube_error err;
	size_t n = 0;
	kube_watch_decoder_init(&d, 4096);
	size_t cut = size ? data[0] % (size + 1) : 0;
	if (kube_watch_decoder_feed(&d, (const char *)data, cut, on_event, &n, &err) == 0)
		(void)kube_watch_decoder_feed(&d, (const char *)data + cut, size - cut, on_event,
					      &n, &err);
	if (d.pending.len > d.pending.max)
		__builtin_trap();
	kube_watch_decoder_release(&d);
	return 0;
}
