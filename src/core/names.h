/* names.h - room, user and node ids (docs/protocol.md section 4): 1 to 128 bytes
 * of A-Z a-z 0-9 _ . : -, refused otherwise and never rewritten; room
 * patterns (section 1a), kept as comma lists, checked and matched here;
 * and tenant names (section 1a): the same characters, at most 64 bytes.
 *
 * Keys: how a room or a user is known inside the process (the bus's, the
 * hub's, the store's and presence's maps, the events' targets). Without a
 * tenant the key is the name itself; in tenant T it is "T/name". A name
 * never holds '/', so the keys of two tenants, or of a tenant and of no
 * tenant, never meet. A tenant's key of everyone (its broadcasts) is "T/";
 * the key of everyone without a tenant is "". Keys never leave the process:
 * clients see names, Redis sees <namespace>:<tenant> (codec/envelope.c). */
#ifndef WSFAN_NAMES_H
#define WSFAN_NAMES_H

#include <stddef.h>

#define NAME_MAX_LEN 128
#define TENANT_MAX_LEN 64
#define KEY_MAX_LEN (TENANT_MAX_LEN + 1 + NAME_MAX_LEN)

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

/* True when s[0..len) is a valid tenant name: 1 to 64 bytes of the
 * characters of an id. */
int name_tenant_valid(const char *s, size_t len);

/* The key of name ("" for everyone) in tenant (NULL or "" for none):
 * name itself without a tenant (nothing is copied), else "tenant/name"
 * written into buf. tenant and name must be valid (or empty). */
const char *name_key(const char *tenant, const char *name, char buf[KEY_MAX_LEN + 1]);

/* The name part of a key (after the tenant's '/'), pointing into key. */
const char *name_of_key(const char *key);

/* The length of the tenant part of a key, 0 without a tenant. */
size_t name_key_tenant_len(const char *key);

#endif
