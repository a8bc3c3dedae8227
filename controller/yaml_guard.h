/*
 * yaml_guard: protections for YAML parsed from files an attacker may shape
 * (kubeconfig, configuration).
 */
#ifndef SBX_YAML_GUARD_H
#define SBX_YAML_GUARD_H

#include <stddef.h>

/* Refuse YAML whose lists or mappings nest deeper than max_depth, before
 * libyaml's scanner, which is quadratic in nesting depth, can be made to spin.
 * Returns 0 (also for syntax errors, which the real parse reports), -EINVAL
 * with a reason in err, or -ENOMEM. */
int yaml_check_depth(const char *yaml, size_t len, int max_depth, char *err, size_t errlen)
	__attribute__((warn_unused_result));

#endif
