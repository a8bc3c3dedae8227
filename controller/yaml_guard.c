/*
 * yaml_guard: checks run on untrusted YAML before libyaml builds a document.
 */
#include "yaml_guard.h"

#include <errno.h>
#include <stdio.h>
#include <yaml.h>

/*
 * libyaml's scanner is quadratic in flow nesting depth (for every token it
 * rescans its stack of possible simple keys): a file of 100,000 "[" takes
 * tens of seconds, and 1 MiB of them hours. This pre-pass over the events
 * stops at the first list or mapping nested deeper than max_depth,
 * before the scanner's stack can grow. Syntax errors are left to the loader,
 * which reports them with the same detail.
 */
int yaml_check_depth(const char *yaml, size_t len, int max_depth, char *err, size_t errlen)
{
	yaml_parser_t parser;
	yaml_event_t ev;
	if (!yaml_parser_initialize(&parser))
		return -ENOMEM;
	yaml_parser_set_input_string(&parser, (const unsigned char *)yaml, len);
	int depth = 0, rc = 0;
	while (yaml_parser_parse(&parser, &ev)) {
		yaml_event_type_t type = ev.type;
		yaml_event_delete(&ev);
		if (type == YAML_SEQUENCE_START_EVENT || type == YAML_MAPPING_START_EVENT) {
			if (++depth > max_depth) {
				snprintf(err, errlen,
					 "invalid YAML at line %zu: nested deeper than %d levels",
					 parser.mark.line + 1, max_depth);
				rc = -EINVAL;
				break;
			}
		} else if (type == YAML_SEQUENCE_END_EVENT || type == YAML_MAPPING_END_EVENT) {
			depth--;
		} else if (type == YAML_STREAM_END_EVENT) {
			break;
		}
	}
	yaml_parser_delete(&parser);
	return rc;
}

