/* list.c - comma-separated lists. See list.h. */
#include "core/list.h"

#include <string.h>

static int is_space(char c)
{
    return c == ' ' || c == '\t';
}

const char *list_next(const char *text, const char **item, size_t *len)
{
    const char *end = strchr(text, ',');
    const char *next = end ? end + 1 : NULL;
    if (!end)
        end = text + strlen(text);
    while (text < end && is_space(*text))
        text++;
    while (end > text && is_space(end[-1]))
        end--;
    *item = text;
    *len = (size_t)(end - text);
    return next;
}

int list_empty(const char *text)
{
    while (is_space(*text))
        text++;
    return !*text;
}
