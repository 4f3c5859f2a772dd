/* names.h - room, user and node ids (docs/protocol.md section 4): 1 to 128 bytes
 * of A-Z a-z 0-9 _ . : -, refused otherwise and never rewritten; and room
 * patterns (section 1a), kept as comma lists, checked and matched here. */
#ifndef WSFAN_NAMES_H
#define WSFAN_NAMES_H

#include <stddef.h>

#define NAME_MAX_LEN 128

/* True when s[0..len) is a valid id. */
int name_valid(const char *s, size_t len);

/* Room patterns (docs/protocol.md section 1a): an exact room id, a prefix
 * of id characters ending in '*' ("team-42:*"), or "*" alone. A list of
 * them is written with commas between ("general,team-42:*"): the token's
 * arrays become such lists, and --anonymous-rooms is one. The empty list
 * matches nothing. */

/* True when s[0..len) is one pattern. */
int name_pattern_valid(const char *s, size_t len);

/* True when list is a comma list of valid patterns (the empty list is). */
int name_patterns_valid(const char *list);

/* True when room matches one of the patterns of list (a valid list). */
int name_patterns_match(const char *list, const char *room);

#endif
