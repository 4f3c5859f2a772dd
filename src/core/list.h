/* list.h - comma-separated lists, the form of every list flag and of
 * HTTP header token lists: "a, b,c". Pure; any thread. */
#ifndef WSFAN_LIST_H
#define WSFAN_LIST_H

#include <stddef.h>

/* The item of text up to the next comma, without the spaces and tabs
 * around it, into *item and *len. Returns where the next item starts, or
 * NULL after the last one. Loop: for (p = text; p;) p = list_next(p, ...). */
const char *list_next(const char *text, const char **item, size_t *len);

/* True when text holds nothing but spaces and tabs (the empty list). */
int list_empty(const char *text);

#endif
