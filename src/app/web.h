/* web.h - the files served from the binary itself (the chat page, the
 * dashboard and the JavaScript client), so that one binary is all a user
 * deploys. scripts/embed-web generates the table from web/ and clients/js/
 * at build time; web.c looks paths up in it. Read-only, any thread. */
#ifndef WSFAN_WEB_H
#define WSFAN_WEB_H

#include <stddef.h>

struct web_asset {
    const char *path;          /* "/", "/dashboard", "/wsfan.js" */
    const char *content_type;
    const unsigned char *bytes;
    size_t len;
};

/* The generated table (build/gen/web_assets.c), web_assets_count long. */
extern const struct web_asset web_assets[];
extern const size_t web_assets_count;

/* The file served at path, or NULL. */
const struct web_asset *web_asset_find(const char *path);

#endif
