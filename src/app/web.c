/* web.c - finds a built-in file by path in the generated table. See web.h. */
#include "app/web.h"

#include <string.h>

const struct web_asset *web_asset_find(const char *path)
{
    for (size_t i = 0; i < web_assets_count; i++)
        if (!strcmp(web_assets[i].path, path))
            return &web_assets[i];
    return NULL;
}
