/* access_log.c - connection events as log lines. See access_log.h. */
#include "app/access_log.h"

#include <string.h>

#include "app/admission.h"
#include "app/app.h"
#include "app/auth.h"
#include "app/client.h"
#include "codec/http.h"
#include "core/clock.h"
#include "core/log.h"

/* Sessions and refusals: info with --log-connections, debug without. */
static enum log_level conn_level(const struct client *c)
{
    return client_app(c)->cfg->log_connections ? LOG_INFO : LOG_DEBUG;
}

static long long since_ms(const struct client *c, uint64_t then_ms)
{
    return (long long)(uv_now(c->conn.loop->uv) - then_ms);
}

void access_log_opened(const struct client *c, const struct http_request *req, const struct auth_result *who)
{
    enum log_level level = conn_level(c);
    if (!log_enabled(level))
        return;
    char session[CONN_ID_MAX], addr[NETADDR_TEXT_MAX];
    conn_id(&c->conn, session);
    net_addr_format(&c->adm.addr, addr);
    log_event(level, "websocket opened", log_text("session", session), log_text("addr", addr),
              log_text("path", req->path), log_text("user", who->user[0] ? who->user : NULL),
              log_text("tenant", who->claims.tenant));
}

void access_log_closed(const struct client *c)
{
    enum log_level level = conn_level(c);
    if (!log_enabled(level))
        return;
    const struct conn *conn = &c->conn;
    char session[CONN_ID_MAX], addr[NETADDR_TEXT_MAX];
    conn_id(conn, session);
    net_addr_format(&c->adm.addr, addr);
    log_event(level, "websocket closed", log_text("session", session), log_text("addr", addr),
              log_text("user", c->user), log_num("code", conn->close_code),
              log_text("reason", conn->close_reason && *conn->close_reason ? conn->close_reason : NULL),
              log_num("duration_ms", since_ms(c, conn->opened_ms)), log_num("bytes_in", (long long)conn->bytes_in),
              log_num("bytes_out", (long long)conn->bytes_out));
}

void access_log_answer(const struct client *c, int status, const char *reason)
{
    const struct http_request *req = c->http ? http_reader_request(c->http) : NULL;
    const char *path = req ? req->path : NULL;
    int handshake = path && !strcmp(path, "/ws");
    const char *msg = !path ? "connection refused" : handshake ? "handshake refused" : "http request";
    enum log_level level = !path || handshake         ? conn_level(c)
                           : !strncmp(path, "/api/", 5) ? LOG_INFO
                                                        : LOG_DEBUG;
    if (!log_enabled(level))
        return;
    char session[CONN_ID_MAX], addr[NETADDR_TEXT_MAX];
    struct net_addr client = c->adm.addr;
    if (path)
        admission_client_addr(c, req, &client);
    conn_id(&c->conn, session);
    net_addr_format(&client, addr);
    log_event(level, msg, log_text("session", session), log_text("addr", addr),
              log_text("method", path ? req->method_name : NULL), log_text("path", path), log_num("status", status),
              log_text("reason", reason), log_text("origin", handshake ? req->origin : NULL),
              log_num("duration_ms", clock_ms32_since(uv_now(c->conn.loop->uv), c->http_since_ms)));
}
