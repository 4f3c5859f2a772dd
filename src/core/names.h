/* names.h - room, user and node ids (docs/protocol.md section 4): 1 to 128 bytes
 * of A-Z a-z 0-9 _ . : -, refused otherwise and never rewritten. */
#ifndef WSFAN_NAMES_H
#define WSFAN_NAMES_H

#include <stddef.h>

#define NAME_MAX_LEN 128

/* True when s[0..len) is a valid id. */
int name_valid(const char *s, size_t len);

#endif
