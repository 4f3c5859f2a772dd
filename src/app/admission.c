/* admission.c - client addresses, connection slots, the Origin check and
 * the API's loopback rule. See admission.h. */
#include "app/admission.h"

#include <stdatomic.h>

#include "app/app.h"
#include "app/client.h"
#include "codec/http.h"
#include "core/addr_count.h"
#include "core/log.h"
#include "core/origin.h"

/* Takes a --max-connections slot; 0 or -1 when the server is full. */
static int take_slot(struct client *c)
{
    struct app *app = client_app(c);
    if (atomic_fetch_add(app->connections, 1) >= app->cfg->max_connections) {
        atomic_fetch_sub(app->connections, 1);
        metrics_refused(c->conn.loop->metrics, METRICS_REFUSED_MAX_CONNECTIONS, 1);
        return -1;
    }
    c->adm.slot = 1;
    return 0;
}

/* Takes the per-IP slot of the client address; 0 or -1 when it has too
 * many. */
static int take_ip_slot(struct client *c)
{
    const struct net_addr *addr = &c->adm.addr;
    struct app *app = client_app(c);
    if (!app->cfg->max_connections_per_ip || c->adm.ip_slot)
        return 0;
    if (addr_count_take(app->per_ip, addr, app->cfg->max_connections_per_ip)) {
        metrics_refused(c->conn.loop->metrics, METRICS_REFUSED_PER_IP, 1);
        if (log_enabled(LOG_DEBUG)) {
            char text[NETADDR_TEXT_MAX];
            net_addr_format(addr, text);
            log_debug("conn %d.%llu: %s has --max-connections-per-ip=%d open, refused with 429", c->conn.loop->index,
                      (unsigned long long)c->conn.seq, text, app->cfg->max_connections_per_ip);
        }
        return -1;
    }
    c->adm.ip_slot = 1;
    return 0;
}

int admission_accept(struct client *c, const struct sockaddr *peer, int admin)
{
    const struct config *cfg = client_app(c)->cfg;
    c->adm.admin = admin != 0;
    if (!admin && take_slot(c))
        return 503;
    if (net_addr_from_sockaddr(peer, &c->adm.addr))
        return 0; /* not an IP peer: nothing to count by */
    if (!net_cidr_list_match(&cfg->trusted_proxies, &c->adm.addr) && take_ip_slot(c))
        return 429;
    return 0;
}

int admission_origin(struct client *c, const struct http_request *req)
{
    if (!req->origin || origin_allowed(&client_app(c)->cfg->allowed_origins, req->origin, req->host))
        return 0;
    metrics_refused(c->conn.loop->metrics, METRICS_REFUSED_ORIGIN, 1);
    log_debug("conn %d.%llu: Origin %.200s is not allowed, refused with 403", c->conn.loop->index,
              (unsigned long long)c->conn.seq, req->origin);
    return 403;
}

void admission_client_addr(const struct client *c, const struct http_request *req, struct net_addr *out)
{
    net_addr_forwarded(&client_app(c)->cfg->trusted_proxies, &c->adm.addr, req->forwarded_for, out);
}

int admission_upgrade(struct client *c, const struct http_request *req)
{
    /* The same address as at accept unless the peer is a trusted proxy,
     * whose connections hold no per-IP slot before this. */
    struct net_addr client;
    admission_client_addr(c, req, &client);
    c->adm.addr = client;
    if (take_ip_slot(c))
        return 429;
    if (!c->adm.slot && c->adm.admin && take_slot(c))
        return 503;
    return 0;
}

int admission_local(const struct client *c, const struct http_request *req)
{
    struct net_addr addr;
    admission_client_addr(c, req, &addr);
    return net_addr_is_loopback(&addr) && host_is_loopback(req->host);
}

void admission_release(struct client *c)
{
    struct app *app = client_app(c);
    if (c->adm.slot)
        atomic_fetch_sub(app->connections, 1);
    if (c->adm.ip_slot)
        addr_count_give(app->per_ip, &c->adm.addr);
    c->adm.slot = c->adm.ip_slot = 0;
}

const char *admission_reason(int status)
{
    switch (status) {
    case 403: return "origin not allowed";
    case 429: return "too many connections from your address";
    case 503: return "server full";
    default: return "refused";
    }
}
