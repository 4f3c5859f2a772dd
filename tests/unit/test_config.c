/* test_config.c - unit tests of config.c: defaults, WSFAN_* variables,
 * flags in both "--opt value" and "--opt=value" forms (the flag wins over
 * the environment), sizes such as 64k, the range of every option, and the
 * one-line message naming the option and value of each refusal; the
 * --config file (comments, quotes, include and its loops, FILE:LINE in
 * refusals, its place below variables and flags), --check-config,
 * --print-config and what a reload copies. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "core/config.h"
#include "core/names.h"

extern char **environ;

/* ---- Running config_parse ----------------------------------------------------- */

static char out_text[8192], err_text[8192];

/* Redirects fd into a temporary file until capture_end. */
struct capture {
    int fd, saved;
    FILE *tmp;
};

static void capture_start(struct capture *c, int fd)
{
    fflush(NULL);
    c->fd = fd;
    c->tmp = tmpfile();
    assert_non_null(c->tmp);
    c->saved = dup(fd);
    assert_true(c->saved >= 0);
    assert_true(dup2(fileno(c->tmp), fd) >= 0);
}

static void capture_end(struct capture *c, char *buf, size_t cap)
{
    fflush(NULL);
    dup2(c->saved, c->fd);
    close(c->saved);
    ssize_t n = pread(fileno(c->tmp), buf, cap - 1, 0);
    buf[n > 0 ? n : 0] = '\0';
    fclose(c->tmp);
}

/* Parses the NULL-terminated args (after "wsfan") into cfg; what it prints
 * lands in out_text and err_text. */
static int parse_args(struct config *cfg, const char *const *args)
{
    char *argv[32];
    int argc = 0;
    struct capture out, err;
    int r;

    argv[argc++] = "wsfan";
    for (; *args; args++) {
        assert_true(argc < 31);
        argv[argc++] = (char *)*args;
    }
    argv[argc] = NULL;
    capture_start(&out, STDOUT_FILENO);
    capture_start(&err, STDERR_FILENO);
    r = config_parse(cfg, argc, argv);
    capture_end(&err, err_text, sizeof err_text);
    capture_end(&out, out_text, sizeof out_text);
    return r;
}

#define PARSE(cfg, ...) parse_args((cfg), (const char *const[]){__VA_ARGS__, NULL})
#define PARSE_NONE(cfg) parse_args((cfg), (const char *const[]){NULL})

/* Each test starts from an environment without WSFAN_* variables. */
static int clear_wsfan_env(void **state)
{
    (void)state;
    for (;;) {
        char name[128];
        int found = 0;
        for (char **e = environ; *e; e++) {
            if (!strncmp(*e, "WSFAN_", 6)) {
                const char *eq = strchr(*e, '=');
                size_t n = eq ? (size_t)(eq - *e) : strlen(*e);
                if (n >= sizeof name)
                    n = sizeof name - 1;
                memcpy(name, *e, n);
                name[n] = '\0';
                found = 1;
                break;
            }
        }
        if (!found)
            return 0;
        unsetenv(name);
    }
}

/* The value must be refused with one line on stderr naming source=value. */
static void expect_refused(const char *const *args, const char *source_eq_value)
{
    struct config cfg;

    if (parse_args(&cfg, args) != CONFIG_ERROR)
        fail_msg("accepted %s", source_eq_value ? source_eq_value : args[0]);
    if (source_eq_value && !strstr(err_text, source_eq_value))
        fail_msg("stderr \"%s\" does not name \"%s\"", err_text, source_eq_value);
    assert_non_null(strchr(err_text, '\n'));
    assert_string_equal(strchr(err_text, '\n'), "\n"); /* one line */
    assert_string_equal(out_text, "");
}

static void expect_flag_refused(const char *flag, const char *value)
{
    char eq[256], named[256];

    snprintf(named, sizeof named, "--%s=%s", flag, value);
    snprintf(eq, sizeof eq, "--%s", flag);
    expect_refused((const char *const[]){eq, value, NULL}, named);
    snprintf(eq, sizeof eq, "--%s=%s", flag, value);
    expect_refused((const char *const[]){eq, NULL}, named);
}

static void expect_env_refused(const char *env, const char *value)
{
    char named[256];

    snprintf(named, sizeof named, "%s=%s", env, value);
    setenv(env, value, 1);
    expect_refused((const char *const[]){NULL}, named);
    unsetenv(env);
}

/* ---- Defaults ----------------------------------------------------------------- */

static void test_config_defaults_without_flags_or_env(void **state)
{
    struct config cfg;
    long cores = sysconf(_SC_NPROCESSORS_ONLN);

    (void)state;
    memset(&cfg, 0xAB, sizeof cfg);
    assert_int_equal(PARSE_NONE(&cfg), CONFIG_OK);
    assert_string_equal(cfg.listen_host, "127.0.0.1");
    assert_int_equal(cfg.listen_port, 8080);
    assert_int_equal(cfg.workers, cores < 1 ? 1 : cores > 256 ? 256 : cores);
    assert_int_equal(cfg.max_message, 1 << 20);
    assert_int_equal(cfg.max_connections, 1000000);
    assert_int_equal(cfg.heartbeat, 25);
    assert_int_equal(cfg.send_queue_limit, 4 << 20);
    assert_int_equal(cfg.handshake_timeout, 10);
    assert_int_equal(cfg.log_level, LOG_INFO);
    assert_int_equal(cfg.max_rooms, 100);
    assert_int_equal(cfg.history_length, 100);
    assert_int_equal(cfg.history_ttl, 3600);
    assert_int_equal(cfg.allow_broadcast, 0);
    /* Limits safe for a server on the open internet. */
    assert_int_equal(cfg.rate_limit, 100);
    assert_int_equal(cfg.max_data, 64 << 10);
    assert_true(cfg.max_data < cfg.max_message);
    assert_int_equal(cfg.max_connections_per_ip, 1000);
    assert_string_equal(cfg.admin_host, "");
    assert_int_equal(cfg.admin_port, 0);
    assert_int_equal(cfg.allowed_origins.count, 0);
    assert_false(cfg.allowed_origins.any);
    assert_int_equal(cfg.trusted_proxies.count, 0);
    assert_string_equal(cfg.api_key, "");
    /* host name and pid, and a valid id */
    assert_true(name_valid(cfg.node_id, strlen(cfg.node_id)));
    char pid[32];
    snprintf(pid, sizeof pid, "-%ld", (long)getpid());
    assert_true(strlen(cfg.node_id) > strlen(pid));
    assert_string_equal(cfg.node_id + strlen(cfg.node_id) - strlen(pid), pid);
    assert_string_equal(out_text, "");
    assert_string_equal(err_text, "");
}

/* ---- Whole numbers ------------------------------------------------------------ */

struct int_option {
    const char *flag, *env;
    size_t offset;
    long long min, max;
};

static const struct int_option int_options[] = {
    {"workers", "WSFAN_WORKERS", offsetof(struct config, workers), 1, 256},
    {"max-connections", "WSFAN_MAX_CONNECTIONS", offsetof(struct config, max_connections), 1, 10000000},
    {"heartbeat", "WSFAN_HEARTBEAT", offsetof(struct config, heartbeat), 1, 3600},
    {"handshake-timeout", "WSFAN_HANDSHAKE_TIMEOUT", offsetof(struct config, handshake_timeout), 1, 3600},
    {"max-rooms", "WSFAN_MAX_ROOMS", offsetof(struct config, max_rooms), 1, 100000},
    {"history-length", "WSFAN_HISTORY_LENGTH", offsetof(struct config, history_length), 0, 1000000},
    {"history-ttl", "WSFAN_HISTORY_TTL", offsetof(struct config, history_ttl), 0, 100000000},
    {"rate-limit", "WSFAN_RATE_LIMIT", offsetof(struct config, rate_limit), 0, 1000000},
    {"max-connections-per-ip", "WSFAN_MAX_CONNECTIONS_PER_IP", offsetof(struct config, max_connections_per_ip), 0,
     10000000},
};

static int int_field(const struct config *cfg, const struct int_option *o)
{
    return *(const int *)((const char *)cfg + o->offset);
}

static void test_config_int_options_accept_their_range_in_both_forms(void **state)
{
    struct config cfg;
    char flag[64], eq[96], value[32];

    (void)state;
    for (size_t i = 0; i < sizeof int_options / sizeof int_options[0]; i++) {
        const struct int_option *o = &int_options[i];
        long long values[] = {o->min, o->min + 1, o->max - 1, o->max};
        for (size_t k = 0; k < 4; k++) {
            snprintf(flag, sizeof flag, "--%s", o->flag);
            snprintf(value, sizeof value, "%lld", values[k]);
            assert_int_equal(PARSE(&cfg, flag, value), CONFIG_OK);
            assert_int_equal(int_field(&cfg, o), values[k]);
            snprintf(eq, sizeof eq, "--%s=%lld", o->flag, values[k]);
            assert_int_equal(PARSE(&cfg, eq), CONFIG_OK);
            assert_int_equal(int_field(&cfg, o), values[k]);
            setenv(o->env, value, 1);
            assert_int_equal(PARSE_NONE(&cfg), CONFIG_OK);
            assert_int_equal(int_field(&cfg, o), values[k]);
            unsetenv(o->env);
        }
    }
}

static void test_config_int_options_refuse_out_of_range_and_non_numbers(void **state)
{
    char value[32];

    (void)state;
    for (size_t i = 0; i < sizeof int_options / sizeof int_options[0]; i++) {
        const struct int_option *o = &int_options[i];
        snprintf(value, sizeof value, "%lld", o->min - 1);
        expect_flag_refused(o->flag, value);
        expect_env_refused(o->env, value);
        snprintf(value, sizeof value, "%lld", o->max + 1);
        expect_flag_refused(o->flag, value);
        expect_env_refused(o->env, value);
        static const char *junk[] = {"", "abc", "12abc", "1.5", "0x10", "1e3", "99999999999999999999", "4k"};
        for (size_t k = 0; k < sizeof junk / sizeof junk[0]; k++) {
            expect_flag_refused(o->flag, junk[k]);
            expect_env_refused(o->env, junk[k]);
        }
    }
}

static void test_config_int_refusal_says_what_is_allowed(void **state)
{
    struct config cfg;

    (void)state;
    assert_int_equal(PARSE(&cfg, "--workers", "0"), CONFIG_ERROR);
    assert_string_equal(err_text, "wsfan: --workers=0: expected a whole number from 1 to 256\n");
    setenv("WSFAN_HEARTBEAT", "soon", 1);
    assert_int_equal(PARSE_NONE(&cfg), CONFIG_ERROR);
    assert_string_equal(err_text, "wsfan: WSFAN_HEARTBEAT=soon: expected a whole number from 1 to 3600\n");
    unsetenv("WSFAN_HEARTBEAT");
}

/* ---- Sizes -------------------------------------------------------------------- */

static void test_config_sizes_take_k_m_g_suffixes(void **state)
{
    static const struct {
        const char *text;
        size_t bytes;
    } sizes[] = {
        {"128", 128},         {"1024", 1024},           {"64k", 64 << 10},       {"64K", 64 << 10},
        {"64kb", 64 << 10},   {"64KB", 64 << 10},       {"1m", 1 << 20},         {"1M", 1 << 20},
        {"1mb", 1 << 20},     {"16m", 16 << 20},        {"1g", 1 << 30},         {"1024m", 1 << 30},
        {"1048576k", 1 << 30}, {"1073741824", 1 << 30},
    };
    struct config cfg;
    char eq[64];

    (void)state;
    for (size_t i = 0; i < sizeof sizes / sizeof sizes[0]; i++) {
        assert_int_equal(PARSE(&cfg, "--max-message", sizes[i].text), CONFIG_OK);
        assert_int_equal(cfg.max_message, sizes[i].bytes);
        snprintf(eq, sizeof eq, "--max-message=%s", sizes[i].text);
        assert_int_equal(PARSE(&cfg, eq), CONFIG_OK);
        assert_int_equal(cfg.max_message, sizes[i].bytes);
        setenv("WSFAN_MAX_MESSAGE", sizes[i].text, 1);
        assert_int_equal(PARSE_NONE(&cfg), CONFIG_OK);
        assert_int_equal(cfg.max_message, sizes[i].bytes);
        unsetenv("WSFAN_MAX_MESSAGE");
    }
    assert_int_equal(PARSE(&cfg, "--send-queue-limit", "1k"), CONFIG_OK);
    assert_int_equal(cfg.send_queue_limit, 1024);
    assert_int_equal(PARSE(&cfg, "--send-queue-limit", "4g"), CONFIG_OK);
    assert_int_equal(cfg.send_queue_limit, (size_t)4 << 30);
    assert_int_equal(PARSE(&cfg, "--send-queue-limit=256k"), CONFIG_OK);
    assert_int_equal(cfg.send_queue_limit, 256 << 10);
    assert_int_equal(PARSE(&cfg, "--max-data", "16k"), CONFIG_OK);
    assert_int_equal(cfg.max_data, 16 << 10);
    assert_int_equal(PARSE(&cfg, "--max-data", "16"), CONFIG_OK);
    assert_int_equal(cfg.max_data, 16);
}

static void test_config_sizes_refuse_bad_text_and_out_of_range(void **state)
{
    static const char *bad_max_message[] = {
        "", "k", "m", "-1", "-1k", "+64k", " 64k", "64k ", "64 k", "1.5m", "64x", "64kk", "64b", "64kbb", "0x40",
        "127",   /* below 128 */
        "1025m", /* above 1g */
        "2g", "1073741825", "1t", "99999999999999999999", "18446744073709551616k",
    };

    (void)state;
    for (size_t i = 0; i < sizeof bad_max_message / sizeof bad_max_message[0]; i++) {
        expect_flag_refused("max-message", bad_max_message[i]);
        expect_env_refused("WSFAN_MAX_MESSAGE", bad_max_message[i]);
    }
    expect_flag_refused("max-data", "15");
    expect_flag_refused("max-data", "2g");
    expect_env_refused("WSFAN_MAX_DATA", "lots");
    expect_flag_refused("send-queue-limit", "1023");
    expect_flag_refused("send-queue-limit", "4097m");
    expect_flag_refused("send-queue-limit", "5g");
    expect_env_refused("WSFAN_SEND_QUEUE_LIMIT", "0");

    struct config cfg;
    assert_int_equal(PARSE(&cfg, "--max-message", "2g"), CONFIG_ERROR);
    assert_string_equal(err_text,
                        "wsfan: --max-message=2g: expected a size from 128 to 1073741824 bytes, such as 64k or 1m\n");
}

/* ---- Flag beats environment --------------------------------------------------- */

static void test_config_flag_beats_environment(void **state)
{
    struct config cfg;

    (void)state;
    setenv("WSFAN_WORKERS", "3", 1);
    setenv("WSFAN_MAX_MESSAGE", "64k", 1);
    setenv("WSFAN_LISTEN", "0.0.0.0:9000", 1);
    setenv("WSFAN_LOG_LEVEL", "debug", 1);
    setenv("WSFAN_ALLOW_BROADCAST", "true", 1);
    setenv("WSFAN_NODE_ID", "from-env", 1);

    assert_int_equal(PARSE_NONE(&cfg), CONFIG_OK);
    assert_int_equal(cfg.workers, 3);
    assert_int_equal(cfg.max_message, 64 << 10);
    assert_string_equal(cfg.listen_host, "0.0.0.0");
    assert_int_equal(cfg.listen_port, 9000);
    assert_int_equal(cfg.log_level, LOG_DEBUG);
    assert_int_equal(cfg.allow_broadcast, 1);
    assert_string_equal(cfg.node_id, "from-env");

    assert_int_equal(PARSE(&cfg, "--workers", "5", "--max-message=1m", "--listen", "localhost:7000", "--log-level=warn",
                           "--allow-broadcast=false", "--node-id", "from-flag"),
                     CONFIG_OK);
    assert_int_equal(cfg.workers, 5);
    assert_int_equal(cfg.max_message, 1 << 20);
    assert_string_equal(cfg.listen_host, "localhost");
    assert_int_equal(cfg.listen_port, 7000);
    assert_int_equal(cfg.log_level, LOG_WARN);
    assert_int_equal(cfg.allow_broadcast, 0);
    assert_string_equal(cfg.node_id, "from-flag");

    /* Options not given as flags keep the environment's value. */
    assert_int_equal(PARSE(&cfg, "--workers", "7"), CONFIG_OK);
    assert_int_equal(cfg.workers, 7);
    assert_int_equal(cfg.max_message, 64 << 10);
    assert_string_equal(cfg.node_id, "from-env");

    unsetenv("WSFAN_WORKERS");
    unsetenv("WSFAN_MAX_MESSAGE");
    unsetenv("WSFAN_LISTEN");
    unsetenv("WSFAN_LOG_LEVEL");
    unsetenv("WSFAN_ALLOW_BROADCAST");
    unsetenv("WSFAN_NODE_ID");
}

static void test_config_last_flag_wins(void **state)
{
    struct config cfg;

    (void)state;
    assert_int_equal(PARSE(&cfg, "--workers", "2", "--workers=4", "--heartbeat", "5", "--workers", "6"), CONFIG_OK);
    assert_int_equal(cfg.workers, 6);
    assert_int_equal(cfg.heartbeat, 5);
}

static void test_config_equals_form_keeps_everything_after_first_equals(void **state)
{
    (void)state;
    /* "--node-id=a=b": the value is "a=b", which is not a valid id. */
    expect_refused((const char *const[]){"--node-id=a=b", NULL}, "--node-id=a=b");
}

/* ---- --listen ------------------------------------------------------------------ */

static void test_config_listen_takes_host_and_port(void **state)
{
    struct config cfg;
    char host63[64], arg[128];

    (void)state;
    assert_int_equal(PARSE(&cfg, "--listen", "0.0.0.0:9000"), CONFIG_OK);
    assert_string_equal(cfg.listen_host, "0.0.0.0");
    assert_int_equal(cfg.listen_port, 9000);
    assert_int_equal(PARSE(&cfg, "--listen=localhost:1"), CONFIG_OK);
    assert_string_equal(cfg.listen_host, "localhost");
    assert_int_equal(cfg.listen_port, 1);
    assert_int_equal(PARSE(&cfg, "--listen", "example.com:65535"), CONFIG_OK);
    assert_string_equal(cfg.listen_host, "example.com");
    assert_int_equal(cfg.listen_port, 65535);
    /* The port is after the last colon. */
    assert_int_equal(PARSE(&cfg, "--listen", "::1:8081"), CONFIG_OK);
    assert_string_equal(cfg.listen_host, "::1");
    assert_int_equal(cfg.listen_port, 8081);
    /* The longest host that fits */
    memset(host63, 'h', 63);
    host63[63] = '\0';
    snprintf(arg, sizeof arg, "%s:80", host63);
    assert_int_equal(PARSE(&cfg, "--listen", arg), CONFIG_OK);
    assert_string_equal(cfg.listen_host, host63);
}

static void test_config_listen_refuses_bad_addresses(void **state)
{
    static const char *bad[] = {"", "8080", "localhost", ":8080", "localhost:", "localhost:0", "localhost:65536",
                                "localhost:-1", "localhost:http", "localhost:80x", "localhost:99999999999999999999"};
    char arg[128];

    (void)state;
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        expect_flag_refused("listen", bad[i]);
        expect_env_refused("WSFAN_LISTEN", bad[i]);
    }
    /* 64 bytes of host do not fit */
    memset(arg, 'h', 64);
    snprintf(arg + 64, sizeof arg - 64, ":80");
    expect_flag_refused("listen", arg);
}

/* ---- Words: log level, booleans, auth, node id ---------------------------------- */

static void test_config_log_level_names(void **state)
{
    static const char *names[] = {"error", "warn", "info", "debug"};
    static const enum log_level levels[] = {LOG_ERROR, LOG_WARN, LOG_INFO, LOG_DEBUG};
    struct config cfg;

    (void)state;
    for (size_t i = 0; i < 4; i++) {
        assert_int_equal(PARSE(&cfg, "--log-level", names[i]), CONFIG_OK);
        assert_int_equal(cfg.log_level, levels[i]);
        setenv("WSFAN_LOG_LEVEL", names[i], 1);
        assert_int_equal(PARSE_NONE(&cfg), CONFIG_OK);
        assert_int_equal(cfg.log_level, levels[i]);
        unsetenv("WSFAN_LOG_LEVEL");
    }
    expect_flag_refused("log-level", "verbose");
    expect_flag_refused("log-level", "warning");
    expect_flag_refused("log-level", "");
    expect_flag_refused("log-level", "0");
    expect_env_refused("WSFAN_LOG_LEVEL", "trace");
}

static void test_config_log_format_and_connections(void **state)
{
    struct config cfg;

    (void)state;
    assert_int_equal(PARSE_NONE(&cfg), CONFIG_OK);
    assert_int_equal(cfg.log_format, LOG_FORMAT_TEXT);
    assert_int_equal(cfg.log_connections, 0);
    assert_int_equal(PARSE(&cfg, "--log-format", "json"), CONFIG_OK);
    assert_int_equal(cfg.log_format, LOG_FORMAT_JSON);
    setenv("WSFAN_LOG_FORMAT", "json", 1);
    assert_int_equal(PARSE(&cfg, "--log-format", "text"), CONFIG_OK);
    assert_int_equal(cfg.log_format, LOG_FORMAT_TEXT);
    assert_int_equal(PARSE_NONE(&cfg), CONFIG_OK);
    assert_int_equal(cfg.log_format, LOG_FORMAT_JSON);
    unsetenv("WSFAN_LOG_FORMAT");
    expect_flag_refused("log-format", "logfmt");
    assert_non_null(strstr(err_text, "expected text or json"));
    assert_int_equal(PARSE(&cfg, "--log-connections"), CONFIG_OK);
    assert_int_equal(cfg.log_connections, 1);
}

/* A bad Redis URL is named in the error line with its password as ***. */
static void test_config_redis_url_refusal_masks_the_password(void **state)
{
    (void)state;
    expect_refused((const char *const[]){"--redis", "redis://u:hunter2@h:0", NULL}, "--redis=redis://u:***@h:0");
    assert_null(strstr(err_text, "hunter2"));
    expect_refused((const char *const[]){"--store-redis", "redis://:hunter2@h", NULL},
                   "--store-redis=redis://:***@h: needs --redis");
    assert_null(strstr(err_text, "hunter2"));
}

static void test_config_allow_broadcast_is_a_switch_or_a_boolean(void **state)
{
    static const char *yes[] = {"1", "true", "yes", "on", "TRUE", "Yes"};
    static const char *no[] = {"0", "false", "no", "off", "FALSE", "Off"};
    struct config cfg;
    char eq[64];

    (void)state;
    /* Alone, the flag turns it on and takes no value. */
    assert_int_equal(PARSE(&cfg, "--allow-broadcast", "--workers", "2"), CONFIG_OK);
    assert_int_equal(cfg.allow_broadcast, 1);
    assert_int_equal(cfg.workers, 2);
    for (size_t i = 0; i < 6; i++) {
        snprintf(eq, sizeof eq, "--allow-broadcast=%s", yes[i]);
        assert_int_equal(PARSE(&cfg, eq), CONFIG_OK);
        assert_int_equal(cfg.allow_broadcast, 1);
        setenv("WSFAN_ALLOW_BROADCAST", yes[i], 1);
        assert_int_equal(PARSE_NONE(&cfg), CONFIG_OK);
        assert_int_equal(cfg.allow_broadcast, 1);
        unsetenv("WSFAN_ALLOW_BROADCAST");

        snprintf(eq, sizeof eq, "--allow-broadcast=%s", no[i]);
        assert_int_equal(PARSE(&cfg, eq), CONFIG_OK);
        assert_int_equal(cfg.allow_broadcast, 0);
        setenv("WSFAN_ALLOW_BROADCAST", no[i], 1);
        assert_int_equal(PARSE_NONE(&cfg), CONFIG_OK);
        assert_int_equal(cfg.allow_broadcast, 0);
        unsetenv("WSFAN_ALLOW_BROADCAST");
    }
    expect_refused((const char *const[]){"--allow-broadcast=maybe", NULL}, "--allow-broadcast=maybe");
    expect_refused((const char *const[]){"--allow-broadcast=", NULL}, "--allow-broadcast=");
    expect_env_refused("WSFAN_ALLOW_BROADCAST", "2");
    /* A boolean word after the switch is its value; anything else is not. */
    assert_int_equal(PARSE(&cfg, "--allow-broadcast", "false"), CONFIG_OK);
    assert_int_equal(cfg.allow_broadcast, 0);
    assert_int_equal(PARSE(&cfg, "--allow-broadcast", "--workers", "3"), CONFIG_OK);
    assert_int_equal(cfg.allow_broadcast, 1);
    expect_refused((const char *const[]){"--allow-broadcast", "maybe", NULL}, "maybe");
}

static void test_config_auth_defaults_to_none(void **state)
{
    struct config cfg;

    (void)state;
    assert_int_equal(PARSE_NONE(&cfg), CONFIG_OK);
    assert_int_equal(cfg.auth, CONFIG_AUTH_NONE);
    assert_int_equal(cfg.jwt_leeway, 5);
    assert_int_equal(cfg.allow_anonymous, 0);
    assert_string_equal(cfg.anonymous_rooms, "");
    assert_int_equal(PARSE(&cfg, "--auth", "none"), CONFIG_OK);
    assert_int_equal(cfg.auth, CONFIG_AUTH_NONE);
    expect_flag_refused("auth", "JWT");
    expect_flag_refused("auth", "basic");
}

/* docs/protocol.md section 1a: exactly one key, from the flag or (better)
 * WSFAN_JWT_SECRET, which is never echoed. */
static void test_config_jwt_needs_exactly_one_key(void **state)
{
    struct config cfg;

    (void)state;
    assert_int_equal(PARSE(&cfg, "--auth", "jwt", "--jwt-secret", "s3cret"), CONFIG_OK);
    assert_int_equal(cfg.auth, CONFIG_AUTH_JWT);
    assert_string_equal(cfg.jwt_secret, "s3cret");
    setenv("WSFAN_JWT_SECRET", "from-env", 1);
    assert_int_equal(PARSE(&cfg, "--auth=jwt"), CONFIG_OK);
    assert_string_equal(cfg.jwt_secret, "from-env");
    expect_refused((const char *const[]){"--auth", "jwt", "--jwt-public-key", "k.pem", NULL}, "not both");
    unsetenv("WSFAN_JWT_SECRET");
    assert_int_equal(PARSE(&cfg, "--auth", "jwt", "--jwt-public-key", "/etc/wsfan/key.pem"), CONFIG_OK);
    assert_string_equal(cfg.jwt_public_key, "/etc/wsfan/key.pem");
    expect_refused((const char *const[]){"--auth", "jwt", NULL}, "--auth jwt: needs exactly one key");
    expect_refused((const char *const[]){"--auth", "jwt", "--jwt-secret", "has space", NULL}, "--jwt-secret=(hidden)");
}

static void test_config_jwt_flags_need_jwt_mode(void **state)
{
    (void)state;
    expect_refused((const char *const[]){"--jwt-secret", "s", NULL}, "--jwt-secret (or WSFAN_JWT_SECRET): only applies with --auth jwt");
    expect_refused((const char *const[]){"--jwt-public-key", "k.pem", NULL}, "--jwt-public-key: only applies");
    expect_refused((const char *const[]){"--jwt-audience", "a", NULL}, "--jwt-audience: only applies");
    expect_refused((const char *const[]){"--jwt-issuer", "i", NULL}, "--jwt-issuer: only applies");
    expect_refused((const char *const[]){"--allow-anonymous", NULL}, "--allow-anonymous: only applies");
    setenv("WSFAN_JWT_SECRET", "from-env", 1);
    expect_refused((const char *const[]){NULL}, "WSFAN_JWT_SECRET");
    unsetenv("WSFAN_JWT_SECRET");
}

static void test_config_anonymous_rooms_are_patterns(void **state)
{
    struct config cfg;

    (void)state;
    assert_int_equal(PARSE(&cfg, "--auth", "jwt", "--jwt-secret", "s", "--allow-anonymous", "--anonymous-rooms",
                           "lobby,public:*", "--jwt-leeway", "0", "--jwt-audience", "https://chat.example.com",
                           "--jwt-issuer", "auth.example.com"),
                     CONFIG_OK);
    assert_int_equal(cfg.allow_anonymous, 1);
    assert_string_equal(cfg.anonymous_rooms, "lobby,public:*");
    assert_int_equal(cfg.jwt_leeway, 0);
    assert_string_equal(cfg.jwt_audience, "https://chat.example.com");
    assert_string_equal(cfg.jwt_issuer, "auth.example.com");
    expect_flag_refused("anonymous-rooms", "lobby,,x");
    expect_flag_refused("anonymous-rooms", "a*b");
    expect_flag_refused("anonymous-rooms", "**");
    expect_flag_refused("jwt-leeway", "-1");
    expect_refused((const char *const[]){"--auth", "jwt", "--jwt-secret", "s", "--anonymous-rooms", "lobby", NULL},
                   "needs --allow-anonymous");
}

static void test_config_node_id_is_a_valid_name(void **state)
{
    struct config cfg;
    char id[130];

    (void)state;
    assert_int_equal(PARSE(&cfg, "--node-id", "node-1.eu:a_b"), CONFIG_OK);
    assert_string_equal(cfg.node_id, "node-1.eu:a_b");
    memset(id, 'n', 128);
    id[128] = '\0';
    assert_int_equal(PARSE(&cfg, "--node-id", id), CONFIG_OK);
    assert_string_equal(cfg.node_id, id);
    setenv("WSFAN_NODE_ID", "env-node", 1);
    assert_int_equal(PARSE_NONE(&cfg), CONFIG_OK);
    assert_string_equal(cfg.node_id, "env-node");
    unsetenv("WSFAN_NODE_ID");

    id[128] = 'n';
    id[129] = '\0';
    expect_flag_refused("node-id", id);
    expect_flag_refused("node-id", "");
    expect_flag_refused("node-id", "has space");
    expect_flag_refused("node-id", "slash/node");
    expect_env_refused("WSFAN_NODE_ID", "n\xc3\xa9");
}

static void test_config_api_key_is_kept_and_never_echoed(void **state)
{
    struct config cfg;
    char key[258];

    (void)state;
    assert_int_equal(PARSE_NONE(&cfg), CONFIG_OK);
    assert_string_equal(cfg.api_key, "");
    assert_int_equal(PARSE(&cfg, "--api-key", "k3y/with+symbols="), CONFIG_OK);
    assert_string_equal(cfg.api_key, "k3y/with+symbols=");
    memset(key, 'k', 256);
    key[256] = '\0';
    setenv("WSFAN_API_KEY", key, 1);
    assert_int_equal(PARSE_NONE(&cfg), CONFIG_OK);
    assert_string_equal(cfg.api_key, key);
    unsetenv("WSFAN_API_KEY");

    key[256] = 'k';
    key[257] = '\0';
    const char *bad[] = {"", "has space", "tab\tkey", key};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        expect_refused((const char *const[]){"--api-key", bad[i], NULL}, "--api-key=(hidden)");
        if (bad[i][0] && strstr(err_text, bad[i]))
            fail_msg("the refused key is repeated on stderr: %s", err_text);
    }
}

static void test_config_api_key_shorter_than_16_is_refused(void **state)
{
    struct config cfg;

    (void)state;
    assert_int_equal(PARSE(&cfg, "--api-key", "0123456789abcde"), CONFIG_ERROR);
    assert_string_equal(err_text, "wsfan: --api-key=(hidden): expected 16 to 256 printable characters without spaces "
                                  "(a shorter key is too easy to guess)\n");
    setenv("WSFAN_API_KEY", "k3y", 1);
    assert_int_equal(PARSE_NONE(&cfg), CONFIG_ERROR);
    assert_non_null(strstr(err_text, "WSFAN_API_KEY=(hidden): expected 16 to 256"));
    assert_null(strstr(err_text, "k3y"));
    unsetenv("WSFAN_API_KEY");
    assert_int_equal(PARSE(&cfg, "--api-key", "0123456789abcdef"), CONFIG_OK);
    assert_string_equal(cfg.api_key, "0123456789abcdef");
}

static void test_config_admin_listen_is_another_address(void **state)
{
    struct config cfg;

    (void)state;
    assert_int_equal(PARSE(&cfg, "--admin-listen", "127.0.0.1:9090"), CONFIG_OK);
    assert_string_equal(cfg.admin_host, "127.0.0.1");
    assert_int_equal(cfg.admin_port, 9090);
    assert_string_equal(cfg.listen_host, "127.0.0.1");
    assert_int_equal(cfg.listen_port, 8080);
    setenv("WSFAN_ADMIN_LISTEN", "[::1]:9091", 1);
    assert_int_equal(PARSE_NONE(&cfg), CONFIG_OK);
    assert_string_equal(cfg.admin_host, "::1");
    assert_int_equal(cfg.admin_port, 9091);
    unsetenv("WSFAN_ADMIN_LISTEN");
    expect_flag_refused("admin-listen", "9090");
    expect_flag_refused("admin-listen", "localhost:0");
    /* The same address as --listen would leave the API public. */
    assert_int_equal(PARSE(&cfg, "--listen", "127.0.0.1:9000", "--admin-listen", "127.0.0.1:9000"), CONFIG_ERROR);
    assert_non_null(strstr(err_text, "--admin-listen=127.0.0.1:9000: must differ from --listen"));
    assert_int_equal(PARSE(&cfg, "--listen", "127.0.0.1:9000", "--admin-listen", "127.0.0.2:9000"), CONFIG_OK);
}

static void test_config_allowed_origins_and_trusted_proxies_are_lists(void **state)
{
    struct config cfg;

    (void)state;
    assert_int_equal(PARSE(&cfg, "--allowed-origins", "https://app.example.com, https://*.example.org"), CONFIG_OK);
    assert_int_equal(cfg.allowed_origins.count, 2);
    assert_true(cfg.allowed_origins.items[1].subdomains);
    assert_int_equal(PARSE(&cfg, "--allowed-origins=*"), CONFIG_OK);
    assert_true(cfg.allowed_origins.any);
    setenv("WSFAN_ALLOWED_ORIGINS", "http://localhost:3000", 1);
    assert_int_equal(PARSE_NONE(&cfg), CONFIG_OK);
    assert_int_equal(cfg.allowed_origins.count, 1);
    assert_int_equal(cfg.allowed_origins.items[0].port, 3000);
    unsetenv("WSFAN_ALLOWED_ORIGINS");
    expect_flag_refused("allowed-origins", "app.example.com");
    expect_flag_refused("allowed-origins", "https://app.example.com/");
    expect_env_refused("WSFAN_ALLOWED_ORIGINS", "https://a.example,");
    assert_int_equal(PARSE(&cfg, "--allowed-origins", "example.com"), CONFIG_ERROR);
    assert_non_null(strstr(err_text, "expected * or a comma-separated list of origins"));

    assert_int_equal(PARSE(&cfg, "--trusted-proxies", "10.0.0.0/8,::1"), CONFIG_OK);
    assert_int_equal(cfg.trusted_proxies.count, 2);
    setenv("WSFAN_TRUSTED_PROXIES", "192.0.2.1", 1);
    assert_int_equal(PARSE_NONE(&cfg), CONFIG_OK);
    assert_int_equal(cfg.trusted_proxies.count, 1);
    unsetenv("WSFAN_TRUSTED_PROXIES");
    expect_flag_refused("trusted-proxies", "10.0.0.0/33");
    expect_flag_refused("trusted-proxies", "proxy.example.com");
    expect_env_refused("WSFAN_TRUSTED_PROXIES", "10.0.0.0/8;::1");
}

/* ---- Arguments that are not options ----------------------------------------------- */

static void test_config_refuses_unknown_options_and_stray_arguments(void **state)
{
    (void)state;
    expect_refused((const char *const[]){"--nope", NULL}, "--nope");
    expect_refused((const char *const[]){"--nope=1", NULL}, "--nope");
    expect_refused((const char *const[]){"--work", "2", NULL}, "--work");
    expect_refused((const char *const[]){"--workers2", NULL}, "--workers2");
    expect_refused((const char *const[]){"--", NULL}, NULL);
    expect_refused((const char *const[]){"-w", "2", NULL}, "-w");
    expect_refused((const char *const[]){"workers", NULL}, "workers");
    expect_refused((const char *const[]){"--workers", "2", "extra", NULL}, "extra");
    /* An unknown WSFAN_ variable is not an option: ignored. */
    setenv("WSFAN_NOT_AN_OPTION", "x", 1);
    struct config cfg;
    assert_int_equal(PARSE_NONE(&cfg), CONFIG_OK);
    unsetenv("WSFAN_NOT_AN_OPTION");
}

static void test_config_refuses_missing_value(void **state)
{
    (void)state;
    expect_refused((const char *const[]){"--workers", NULL}, "--workers");
    expect_refused((const char *const[]){"--heartbeat", "5", "--listen", NULL}, "--listen");
    expect_refused((const char *const[]){"--workers=", NULL}, "--workers=");
}

static void test_config_help_and_version_exit(void **state)
{
    struct config cfg;

    (void)state;
    assert_int_equal(PARSE(&cfg, "--help"), CONFIG_EXIT);
    assert_non_null(strstr(out_text, "usage: wsfan"));
    /* every option with its variable */
    assert_non_null(strstr(out_text, "--max-message"));
    assert_non_null(strstr(out_text, "WSFAN_MAX_MESSAGE"));
    assert_non_null(strstr(out_text, "WSFAN_SEND_QUEUE_LIMIT"));
    assert_non_null(strstr(out_text, "WSFAN_NODE_ID"));
    assert_non_null(strstr(out_text, "--allow-broadcast"));
    assert_string_equal(err_text, "");

    assert_int_equal(PARSE(&cfg, "-h"), CONFIG_EXIT);
    assert_non_null(strstr(out_text, "usage: wsfan"));

    assert_int_equal(PARSE(&cfg, "--version"), CONFIG_EXIT);
    assert_int_equal(strncmp(out_text, "wsfan ", 6), 0);
    assert_string_equal(strchr(out_text, '\n'), "\n");

    /* Earlier flags are checked first; help stops parsing. */
    assert_int_equal(PARSE(&cfg, "--help", "--workers", "0"), CONFIG_EXIT);
    assert_int_equal(PARSE(&cfg, "--workers", "0", "--help"), CONFIG_ERROR);
}

/* ---- The config file ----------------------------------------------------------- */

static char conf_dir[] = "/tmp/wsfan-test-config-XXXXXX";

/* Writes text to name under conf_dir; returns its path, valid for the next 7 calls. */
static const char *conf_write(const char *name, const char *text)
{
    static char path[8][512];
    static int next;
    char *p = path[next++ % 8];
    snprintf(p, sizeof path[0], "%s/%s", conf_dir, name);
    FILE *f = fopen(p, "w");
    assert_non_null(f);
    fputs(text, f);
    fclose(f);
    return p;
}

static int make_conf_dir(void **state)
{
    (void)state;
    assert_non_null(mkdtemp(conf_dir));
    char sub[600];
    snprintf(sub, sizeof sub, "%s/sub", conf_dir);
    assert_int_equal(mkdir(sub, 0700), 0);
    return 0;
}

static int remove_conf_dir(void **state)
{
    char cmdline[700];
    (void)state;
    snprintf(cmdline, sizeof cmdline, "rm -rf '%s'", conf_dir);
    return system(cmdline) ? -1 : 0;
}

/* The one line of the refusal of file, or fails. */
static const char *file_refused(const char *file)
{
    struct config cfg;
    if (PARSE(&cfg, "--config", file) != CONFIG_ERROR)
        fail_msg("accepted %s", file);
    assert_string_equal(strchr(err_text, '\n'), "\n");
    return err_text;
}

static void test_config_file_reads_comments_blanks_and_quotes(void **state)
{
    struct config cfg;

    (void)state;
    const char *f = conf_write("a.conf", "# a comment\n"
                                         "\n"
                                         "   # an indented comment\n"
                                         "rate-limit 50   \r\n"
                                         "\tmax-data\t16k\n"
                                         "allow-broadcast yes\n"
                                         "jwt-audience \"a\\\"b\\\\c\"  \n"
                                         "auth jwt\n"
                                         "jwt-secret s#not-a-comment\n"
                                         "allowed-origins \"https://a.example.com, https://b.example.com\"\n");
    assert_int_equal(PARSE(&cfg, "--config", f), CONFIG_OK);
    assert_int_equal(cfg.rate_limit, 50);
    assert_int_equal(cfg.max_data, 16 << 10);
    assert_int_equal(cfg.allow_broadcast, 1);
    assert_string_equal(cfg.jwt_audience, "a\"b\\c");
    assert_string_equal(cfg.jwt_secret, "s#not-a-comment");
    assert_int_equal(cfg.allowed_origins.count, 2);
    assert_string_equal(err_text, "");

    f = conf_write("a.conf", "allow-broadcast false\n");
    assert_int_equal(PARSE(&cfg, "--config", f), CONFIG_OK);
    assert_int_equal(cfg.allow_broadcast, 0);
}

static void test_config_file_refusals_name_file_and_line(void **state)
{
    char want[1024];

    (void)state;
    const char *f = conf_write("bad.conf", "rate-limit 50\n\n# x\nworkers 0\n");
    snprintf(want, sizeof want, "wsfan: %s:4: workers=0: expected a whole number from 1 to 256\n", f);
    assert_string_equal(file_refused(f), want);

    f = conf_write("bad.conf", "max-connections 5\nlisten-port 80\n");
    snprintf(want, sizeof want, "wsfan: %s:2: listen-port: unknown option (see --help)\n", f);
    assert_string_equal(file_refused(f), want);

    f = conf_write("bad.conf", "api-key \"0123456789abcdef\n");
    snprintf(want, sizeof want, "wsfan: %s:1: api-key: the value's closing quote is missing\n", f);
    assert_string_equal(file_refused(f), want);

    f = conf_write("bad.conf", "node-id \"a\" b\n");
    assert_non_null(strstr(file_refused(f), ":1: node-id: text after the closing quote"));

    f = conf_write("bad.conf", "heartbeat\n");
    assert_non_null(strstr(file_refused(f), ":1: heartbeat: missing value"));

    /* A secret is not repeated. */
    f = conf_write("bad.conf", "api-key short\n");
    assert_non_null(strstr(file_refused(f), ":1: api-key=(hidden): "));

    /* The file's name comes from --config or WSFAN_CONFIG, never from a file. */
    f = conf_write("bad.conf", "config other.conf\n");
    assert_non_null(strstr(file_refused(f), ":1: config: not allowed in a config file"));
    assert_non_null(strstr(file_refused("/nonexistent/wsfan.conf"),
                           "wsfan: config file /nonexistent/wsfan.conf: cannot read it: No such file"));
}

static void test_config_file_includes_relative_to_the_including_file(void **state)
{
    struct config cfg;

    (void)state;
    conf_write("sub/limits.conf", "max-rooms 7\ninclude deeper.conf\n");
    conf_write("sub/deeper.conf", "heartbeat 9\n");
    const char *f = conf_write("main.conf", "include sub/limits.conf\nmax-rooms 8\n");
    assert_int_equal(PARSE(&cfg, "--config", f), CONFIG_OK);
    assert_int_equal(cfg.max_rooms, 8); /* a later line wins */
    assert_int_equal(cfg.heartbeat, 9);

    conf_write("sub/deeper.conf", "heartbeat x\n");
    assert_non_null(strstr(file_refused(f), "sub/deeper.conf:1: heartbeat=x: expected"));

    f = conf_write("main.conf", "include missing.conf\n");
    assert_non_null(strstr(file_refused(f), "main.conf:1: include "));
    assert_non_null(strstr(err_text, "missing.conf: cannot read it"));
}

static void test_config_file_refuses_include_loops_and_depth(void **state)
{
    char name[64], text[64];

    (void)state;
    const char *f = conf_write("self.conf", "rate-limit 5\ninclude self.conf\n");
    assert_non_null(strstr(file_refused(f), "self.conf:2: include self.conf: a loop"));

    conf_write("sub/b.conf", "include ../a.conf\n");
    f = conf_write("a.conf", "include sub/b.conf\n");
    assert_non_null(strstr(file_refused(f), "b.conf:1: include ../a.conf: a loop"));

    /* d0 includes d1 ... d8: eight levels are allowed, nine are not. */
    for (int i = 0; i <= 9; i++) {
        snprintf(name, sizeof name, "d%d.conf", i);
        snprintf(text, sizeof text, i < 9 ? "include d%d.conf\n" : "rate-limit 3\n", i + 1);
        conf_write(name, text);
    }
    assert_non_null(strstr(file_refused(conf_write("d0.conf", "include d1.conf\n")),
                           "d8.conf:1: include d9.conf: more than 8 levels of include"));
    struct config cfg;
    snprintf(name, sizeof name, "%s/d1.conf", conf_dir);
    assert_int_equal(PARSE(&cfg, "--config", name), CONFIG_OK);
    assert_int_equal(cfg.rate_limit, 3);
}

static void test_config_file_loses_to_environment_and_flags(void **state)
{
    struct config cfg;

    (void)state;
    const char *f = conf_write("p.conf", "rate-limit 50\nmax-rooms 7\nheartbeat 9\n");
    setenv("WSFAN_MAX_ROOMS", "8", 1);
    setenv("WSFAN_HEARTBEAT", "10", 1);
    assert_int_equal(PARSE(&cfg, "--config", f, "--heartbeat", "11"), CONFIG_OK);
    assert_int_equal(cfg.rate_limit, 50); /* file over default */
    assert_int_equal(cfg.max_rooms, 8);   /* variable over file */
    assert_int_equal(cfg.heartbeat, 11);  /* flag over variable */
    assert_int_equal(cfg.history_length, 100);
    unsetenv("WSFAN_MAX_ROOMS");
    unsetenv("WSFAN_HEARTBEAT");

    /* WSFAN_CONFIG names the file too, and --config wins over it. */
    setenv("WSFAN_CONFIG", f, 1);
    assert_int_equal(PARSE_NONE(&cfg), CONFIG_OK);
    assert_int_equal(cfg.rate_limit, 50);
    assert_int_equal(PARSE(&cfg, "--config", conf_write("q.conf", "rate-limit 60\n")), CONFIG_OK);
    assert_int_equal(cfg.rate_limit, 60);
    unsetenv("WSFAN_CONFIG");
}

static void test_config_check_and_print_config(void **state)
{
    struct config cfg;

    (void)state;
    const char *f = conf_write("c.conf", "rate-limit 50\n");
    assert_int_equal(PARSE(&cfg, "--config", f, "--check-config"), CONFIG_CHECK);
    assert_string_equal(out_text, "");
    assert_int_equal(PARSE(&cfg, "--check-config", "--workers", "0"), CONFIG_ERROR);

    assert_int_equal(PARSE(&cfg, "--config", f, "--max-data", "16k", "--print-config"), CONFIG_EXIT);
    assert_non_null(strstr(out_text, "\nrate-limit 50\n"));
    assert_non_null(strstr(out_text, "\nmax-data 16k\n"));
    assert_non_null(strstr(out_text, "\n# history-length 100\n"));
    assert_null(strstr(out_text, "\nconfig"));
    /* A secret is not printed. */
    assert_int_equal(PARSE(&cfg, "--api-key", "0123456789abcdefXYZ", "--print-config"), CONFIG_EXIT);
    assert_null(strstr(out_text, "0123456789abcdefXYZ"));
    assert_non_null(strstr(out_text, "# api-key is set; not printed\n"));
}

static void test_config_load_returns_the_error_without_printing(void **state)
{
    struct config cfg;
    char err[512];
    char *argv[] = {"wsfan", "--config", NULL, NULL};
    struct capture out, e;

    (void)state;
    argv[2] = (char *)conf_write("l.conf", "rate-limit 50\nheartbeat 0\n");
    capture_start(&out, STDOUT_FILENO);
    capture_start(&e, STDERR_FILENO);
    int r = config_load(&cfg, 3, argv, err, sizeof err);
    capture_end(&e, err_text, sizeof err_text);
    capture_end(&out, out_text, sizeof out_text);
    assert_int_equal(r, CONFIG_ERROR);
    assert_non_null(strstr(err, "l.conf:2: heartbeat=0: expected a whole number from 1 to 3600"));
    assert_string_equal(err_text, "");
    assert_string_equal(out_text, "");
}

static void test_config_apply_live_copies_only_live_options(void **state)
{
    struct config running, fresh;
    struct capture e;

    (void)state;
    assert_int_equal(PARSE(&running, "--rate-limit", "5", "--heartbeat", "9"), CONFIG_OK);
    assert_int_equal(PARSE(&fresh, "--rate-limit", "50", "--heartbeat", "10", "--max-data", "16k", "--allowed-origins",
                           "https://a.example.com", "--api-key", "0123456789abcdefXYZ", "--log-level", "debug"),
                     CONFIG_OK);
    capture_start(&e, STDERR_FILENO);
    int n = config_apply_live(&running, &fresh);
    capture_end(&e, err_text, sizeof err_text);
    assert_int_equal(n, 5);
    assert_int_equal(running.rate_limit, 50);
    assert_int_equal(running.max_data, 16 << 10);
    assert_int_equal(running.allowed_origins.count, 1);
    assert_string_equal(running.api_key, "0123456789abcdefXYZ");
    assert_int_equal(running.log_level, LOG_DEBUG);
    assert_int_equal(running.heartbeat, 9);
    assert_non_null(strstr(err_text, "config: rate-limit 5 -> 50\n"));
    assert_non_null(strstr(err_text, "config: max-data 64k -> 16k\n"));
    assert_non_null(strstr(err_text, "config: allowed-origins (none) -> https://a.example.com:443\n"));
    assert_non_null(strstr(err_text, "config: heartbeat changed; takes effect after a restart\n"));
    assert_non_null(strstr(err_text, "config: api-key changed\n"));
    assert_null(strstr(err_text, "0123456789abcdefXYZ"));
    capture_start(&e, STDERR_FILENO);
    n = config_apply_live(&running, &fresh);
    capture_end(&e, err_text, sizeof err_text);
    assert_int_equal(n, 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup(test_config_defaults_without_flags_or_env, clear_wsfan_env),
        cmocka_unit_test_setup(test_config_int_options_accept_their_range_in_both_forms, clear_wsfan_env),
        cmocka_unit_test_setup(test_config_int_options_refuse_out_of_range_and_non_numbers, clear_wsfan_env),
        cmocka_unit_test_setup(test_config_int_refusal_says_what_is_allowed, clear_wsfan_env),
        cmocka_unit_test_setup(test_config_sizes_take_k_m_g_suffixes, clear_wsfan_env),
        cmocka_unit_test_setup(test_config_sizes_refuse_bad_text_and_out_of_range, clear_wsfan_env),
        cmocka_unit_test_setup(test_config_flag_beats_environment, clear_wsfan_env),
        cmocka_unit_test_setup(test_config_last_flag_wins, clear_wsfan_env),
        cmocka_unit_test_setup(test_config_equals_form_keeps_everything_after_first_equals, clear_wsfan_env),
        cmocka_unit_test_setup(test_config_listen_takes_host_and_port, clear_wsfan_env),
        cmocka_unit_test_setup(test_config_listen_refuses_bad_addresses, clear_wsfan_env),
        cmocka_unit_test_setup(test_config_log_level_names, clear_wsfan_env),
        cmocka_unit_test_setup(test_config_log_format_and_connections, clear_wsfan_env),
        cmocka_unit_test_setup(test_config_redis_url_refusal_masks_the_password, clear_wsfan_env),
        cmocka_unit_test_setup(test_config_allow_broadcast_is_a_switch_or_a_boolean, clear_wsfan_env),
        cmocka_unit_test_setup(test_config_auth_defaults_to_none, clear_wsfan_env),
        cmocka_unit_test_setup(test_config_jwt_needs_exactly_one_key, clear_wsfan_env),
        cmocka_unit_test_setup(test_config_jwt_flags_need_jwt_mode, clear_wsfan_env),
        cmocka_unit_test_setup(test_config_anonymous_rooms_are_patterns, clear_wsfan_env),
        cmocka_unit_test_setup(test_config_node_id_is_a_valid_name, clear_wsfan_env),
        cmocka_unit_test_setup(test_config_api_key_is_kept_and_never_echoed, clear_wsfan_env),
        cmocka_unit_test_setup(test_config_api_key_shorter_than_16_is_refused, clear_wsfan_env),
        cmocka_unit_test_setup(test_config_admin_listen_is_another_address, clear_wsfan_env),
        cmocka_unit_test_setup(test_config_allowed_origins_and_trusted_proxies_are_lists, clear_wsfan_env),
        cmocka_unit_test_setup(test_config_refuses_unknown_options_and_stray_arguments, clear_wsfan_env),
        cmocka_unit_test_setup(test_config_refuses_missing_value, clear_wsfan_env),
        cmocka_unit_test_setup(test_config_help_and_version_exit, clear_wsfan_env),
        cmocka_unit_test_setup(test_config_file_reads_comments_blanks_and_quotes, clear_wsfan_env),
        cmocka_unit_test_setup(test_config_file_refusals_name_file_and_line, clear_wsfan_env),
        cmocka_unit_test_setup(test_config_file_includes_relative_to_the_including_file, clear_wsfan_env),
        cmocka_unit_test_setup(test_config_file_refuses_include_loops_and_depth, clear_wsfan_env),
        cmocka_unit_test_setup(test_config_file_loses_to_environment_and_flags, clear_wsfan_env),
        cmocka_unit_test_setup(test_config_check_and_print_config, clear_wsfan_env),
        cmocka_unit_test_setup(test_config_load_returns_the_error_without_printing, clear_wsfan_env),
        cmocka_unit_test_setup(test_config_apply_live_copies_only_live_options, clear_wsfan_env),
    };

    return cmocka_run_group_tests(tests, make_conf_dir, remove_conf_dir);
}
