/*
 * wp_bench.c — load generator, sink and echo server for the tunnel benchmark
 * (tests/bench/run_bench.py drives it; see tests/bench/README.md).
 *
 * Not a test: it measures. Blocking sockets and one thread per stream keep the
 * load generator out of the way; TLS on the client side is OpenSSL (the library
 * stunnel uses, and the fastest on the box), so the TLS relays under test, not
 * the client, set the pace. OpenSSL's headers come with libssl-dev, which
 * libpq-dev (a build dependency) already pulls in.
 *
 *   wp_bench serve [--host IP]
 *       Listens on three ephemeral loopback ports and prints
 *       "sink=P echo=P ctl=P" on one line: a sink (discards, counts bytes),
 *       an echo server, and a control port answering each "stats\n" line with
 *       "<bytes received by the sink> <CLOCK_MONOTONIC ns>\n". Runs until
 *       SIGTERM/SIGINT.
 *
 *   wp_bench bulk --target HOST:PORT --stats HOST:PORT [path options]
 *                 [--streams N] [--warmup S] [--seconds S] [--watch NAME=PID]...
 *       Opens N streams to the sink (through the path), sends as fast as it
 *       can, and after the warm-up measures the sink's byte counter over the
 *       window (steady state, unaffected by buffering along the path). Prints
 *       one JSON object: bytes, seconds, MB/s (10^6), and each watched
 *       process's CPU use (cores) over the same window ("client" is itself).
 *
 *   wp_bench echo --target HOST:PORT [path options] [--size N] [--samples N]
 *                 [--warmup N]
 *       One stream to the echo server: sends N bytes, waits for them back,
 *       checks them, repeats. Prints one JSON object with the round-trip
 *       percentiles in microseconds.
 *
 *   path options: --tls (TLS 1.2 client) --ca FILE --sni NAME
 *                 --connect NODE:SERVICE --token-file FILE (wolfpackd CONNECT)
 *
 * Exit status: 0 on success, 1 on a usage or setup error (the message on
 * stderr says which), 2 when a stream failed during a measurement.
 */
#include <errno.h>
#include <inttypes.h>
#include <limits.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <arpa/inet.h>
#include <openssl/err.h>
#include <openssl/ssl.h>

#define BENCH_MAX_STREAMS  256
#define BENCH_MAX_WATCH    8
#define BENCH_SINK_BUF     (256 * 1024)
#define BENCH_ECHO_BUF     (64 * 1024)
#define BENCH_CHUNK        (64 * 1024)
#define BENCH_MAX_SAMPLES  1000000
#define BENCH_MAX_MSG      (64 * 1024)
#define BENCH_HEAD_MAX     4096
#define BENCH_TOKEN_MAX    512
#define BENCH_CONNECT_SECS 10

/* ---- small helpers ---- */

static void die(const char *fmt, ...) __attribute__((format(printf, 1, 2), noreturn));

static void die(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    fputs("wp_bench: ", stderr);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fputc('\n', stderr);
    exit(1);
}

static uint64_t now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

static void sleep_s(double s)
{
    struct timespec ts;
    ts.tv_sec = (time_t)s;
    ts.tv_nsec = (long)((s - (double)ts.tv_sec) * 1e9);
    while (nanosleep(&ts, &ts) < 0 && errno == EINTR) {
    }
}

static void set_nodelay(int fd)
{
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
}

/* Splits "host:port" (the last colon) into host (cap bytes) and port. 0 or -1. */
static int split_hostport(const char *s, char *host, size_t cap, int *port)
{
    const char *c = strrchr(s, ':');
    if (!c || c == s || (size_t)(c - s) >= cap)
        return -1;
    char *end;
    long p = strtol(c + 1, &end, 10);
    if (*end != '\0' || p <= 0 || p > 65535)
        return -1;
    memcpy(host, s, (size_t)(c - s));
    host[c - s] = '\0';
    *port = (int)p;
    return 0;
}

/* Blocking TCP connect to host:port with TCP_NODELAY. Returns the fd or -1. */
static int tcp_dial(const char *hostport)
{
    char host[256];
    int port;
    if (split_hostport(hostport, host, sizeof(host), &port) < 0)
        die("bad address '%s' (want host:port)", hostport);
    struct addrinfo hints, *res = NULL;
    memset(&hints, 0, sizeof(hints));
    hints.ai_family = AF_UNSPEC;
    hints.ai_socktype = SOCK_STREAM;
    char ps[16];
    snprintf(ps, sizeof(ps), "%d", port);
    if (getaddrinfo(host, ps, &hints, &res) != 0 || !res)
        return -1;
    int fd = -1;
    for (struct addrinfo *ai = res; ai; ai = ai->ai_next) {
        fd = socket(ai->ai_family, ai->ai_socktype | SOCK_CLOEXEC, ai->ai_protocol);
        if (fd < 0)
            continue;
        if (connect(fd, ai->ai_addr, ai->ai_addrlen) == 0)
            break;
        close(fd);
        fd = -1;
    }
    freeaddrinfo(res);
    if (fd >= 0)
        set_nodelay(fd);
    return fd;
}

/* ---- serve: sink, echo, control ---- */

static atomic_uint_least64_t g_sink_bytes;

static int listen_any(const char *host, int *port)
{
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0)
        die("socket: %s", strerror(errno));
    int one = 1;
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
    struct sockaddr_in sa;
    memset(&sa, 0, sizeof(sa));
    sa.sin_family = AF_INET;
    if (inet_pton(AF_INET, host, &sa.sin_addr) != 1)
        die("bad --host '%s' (want an IPv4 literal)", host);
    if (bind(fd, (struct sockaddr *)&sa, sizeof(sa)) < 0 || listen(fd, 512) < 0)
        die("bind/listen %s: %s", host, strerror(errno));
    socklen_t sl = sizeof(sa);
    getsockname(fd, (struct sockaddr *)&sa, &sl);
    *port = ntohs(sa.sin_port);
    return fd;
}

static int send_all(int fd, const void *p, size_t n)
{
    const char *q = p;
    while (n > 0) {
        ssize_t w = send(fd, q, n, MSG_NOSIGNAL);
        if (w < 0 && errno == EINTR)
            continue;
        if (w <= 0)
            return -1;
        q += w;
        n -= (size_t)w;
    }
    return 0;
}

static void *sink_conn(void *arg)
{
    int fd = (int)(intptr_t)arg;
    uint8_t *buf = malloc(BENCH_SINK_BUF);
    if (buf) {
        for (;;) {
            ssize_t n = recv(fd, buf, BENCH_SINK_BUF, 0);
            if (n < 0 && errno == EINTR)
                continue;
            if (n <= 0)
                break;
            atomic_fetch_add_explicit(&g_sink_bytes, (uint64_t)n, memory_order_relaxed);
        }
    }
    free(buf);
    close(fd);
    return NULL;
}

static void *echo_conn(void *arg)
{
    int fd = (int)(intptr_t)arg;
    uint8_t *buf = malloc(BENCH_ECHO_BUF);
    if (buf) {
        for (;;) {
            ssize_t n = recv(fd, buf, BENCH_ECHO_BUF, 0);
            if (n < 0 && errno == EINTR)
                continue;
            if (n <= 0 || send_all(fd, buf, (size_t)n) < 0)
                break;
        }
    }
    free(buf);
    close(fd);
    return NULL;
}

static void *ctl_conn(void *arg)
{
    int fd = (int)(intptr_t)arg;
    char line[64];
    size_t have = 0;
    for (;;) {
        ssize_t n = recv(fd, line + have, sizeof(line) - 1 - have, 0);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            break;
        have += (size_t)n;
        line[have] = '\0';
        char *nl;
        while ((nl = strchr(line, '\n')) != NULL) {
            *nl = '\0';
            char out[64];
            int k;
            if (strcmp(line, "stats") == 0 || strcmp(line, "stats\r") == 0)
                k = snprintf(out, sizeof(out), "%" PRIu64 " %" PRIu64 "\n",
                             (uint64_t)atomic_load(&g_sink_bytes), now_ns());
            else
                k = snprintf(out, sizeof(out), "error\n");
            if (send_all(fd, out, (size_t)k) < 0)
                goto done;
            size_t rest = have - (size_t)(nl + 1 - line);
            memmove(line, nl + 1, rest);
            have = rest;
            line[have] = '\0';
        }
        if (have == sizeof(line) - 1)
            break; /* a line longer than any command */
    }
done:
    close(fd);
    return NULL;
}

typedef struct acceptor {
    int lfd;
    void *(*fn)(void *);
} acceptor;

static void *accept_loop(void *arg)
{
    acceptor *a = arg;
    for (;;) {
        int fd = accept4(a->lfd, NULL, NULL, SOCK_CLOEXEC);
        if (fd < 0) {
            if (errno == EINTR || errno == ECONNABORTED || errno == EMFILE || errno == ENFILE)
                continue;
            return NULL;
        }
        set_nodelay(fd);
        pthread_t t;
        pthread_attr_t at;
        pthread_attr_init(&at);
        pthread_attr_setdetachstate(&at, PTHREAD_CREATE_DETACHED);
        pthread_attr_setstacksize(&at, 256 * 1024);
        if (pthread_create(&t, &at, a->fn, (void *)(intptr_t)fd) != 0)
            close(fd);
        pthread_attr_destroy(&at);
    }
}

static int cmd_serve(int argc, char **argv)
{
    const char *host = "127.0.0.1";
    for (int i = 0; i < argc; i++) {
        if (strcmp(argv[i], "--host") == 0 && i + 1 < argc)
            host = argv[++i];
        else
            die("serve: unknown argument '%s'", argv[i]);
    }
    sigset_t set;
    sigemptyset(&set);
    sigaddset(&set, SIGTERM);
    sigaddset(&set, SIGINT);
    pthread_sigmask(SIG_BLOCK, &set, NULL); /* inherited by every thread */
    static acceptor acc[3];
    int ports[3];
    void *(*fns[3])(void *) = {sink_conn, echo_conn, ctl_conn};
    for (int i = 0; i < 3; i++) {
        acc[i].lfd = listen_any(host, &ports[i]);
        acc[i].fn = fns[i];
    }
    for (int i = 0; i < 3; i++) {
        pthread_t t;
        if (pthread_create(&t, NULL, accept_loop, &acc[i]) != 0)
            die("pthread_create failed");
        pthread_detach(t);
    }
    printf("sink=%d echo=%d ctl=%d\n", ports[0], ports[1], ports[2]);
    fflush(stdout);
    int sig = 0;
    sigwait(&set, &sig);
    return 0;
}

/* ---- client side: one stream through a path ---- */

typedef struct path_opts {
    const char *target;
    int tls;
    const char *ca;
    const char *sni;
    const char *connect; /* NODE:SERVICE for wolfpackd, or NULL */
    char token[BENCH_TOKEN_MAX];
    SSL_CTX *ctx;
} path_opts;

typedef struct stream {
    int fd;
    SSL *ssl;
    pthread_t th;
    int failed;
} stream;

static const char *ssl_errstr(void)
{
    static char buf[256];
    unsigned long e = ERR_get_error();
    if (e == 0)
        return "no OpenSSL error queued";
    ERR_error_string_n(e, buf, sizeof(buf));
    return buf;
}

/* Writes all of p; 0 or -1. */
static int stream_write(stream *s, const void *p, size_t n)
{
    if (!s->ssl)
        return send_all(s->fd, p, n);
    const char *q = p;
    while (n > 0) {
        int k = n > INT_MAX ? INT_MAX : (int)n;
        int w = SSL_write(s->ssl, q, k);
        if (w <= 0)
            return -1;
        q += w;
        n -= (size_t)w;
    }
    return 0;
}

/* Reads up to n bytes; >0, 0 on EOF, -1 on error. */
static ssize_t stream_read(stream *s, void *p, size_t n)
{
    if (!s->ssl) {
        for (;;) {
            ssize_t r = recv(s->fd, p, n, 0);
            if (r < 0 && errno == EINTR)
                continue;
            return r;
        }
    }
    int r = SSL_read(s->ssl, p, n > INT_MAX ? INT_MAX : (int)n);
    if (r > 0)
        return r;
    return SSL_get_error(s->ssl, r) == SSL_ERROR_ZERO_RETURN ? 0 : -1;
}

static int stream_read_exact(stream *s, uint8_t *p, size_t n)
{
    while (n > 0) {
        ssize_t r = stream_read(s, p, n);
        if (r <= 0)
            return -1;
        p += r;
        n -= (size_t)r;
    }
    return 0;
}

static void stream_close(stream *s)
{
    if (s->ssl) {
        SSL_free(s->ssl);
        s->ssl = NULL;
    }
    if (s->fd >= 0)
        close(s->fd);
    s->fd = -1;
}

/* Sends "CONNECT node:svc" and reads the answer head; the stream is raw after a 200. */
static void stream_connect_tunnel(stream *s, const path_opts *po)
{
    char req[BENCH_HEAD_MAX];
    int n = snprintf(req, sizeof(req),
                     "CONNECT %s HTTP/1.1\r\nHost: %s\r\nAuthorization: Bearer %s\r\n\r\n",
                     po->connect, po->connect, po->token);
    if (n < 0 || (size_t)n >= sizeof(req))
        die("CONNECT request too long");
    if (stream_write(s, req, (size_t)n) < 0)
        die("CONNECT: write failed");
    char head[BENCH_HEAD_MAX];
    size_t have = 0;
    /* one byte at a time: nothing after the head may be consumed here */
    while (have < 4 || memcmp(head + have - 4, "\r\n\r\n", 4) != 0) {
        if (have == sizeof(head) - 1)
            die("CONNECT: answer head too long");
        if (stream_read(s, head + have, 1) != 1)
            die("CONNECT: connection closed before the answer");
        have++;
    }
    head[have] = '\0';
    if (strncmp(head, "HTTP/1.1 200", 12) != 0) {
        char *eol = strstr(head, "\r\n");
        if (eol)
            *eol = '\0';
        die("CONNECT %s refused: %s", po->connect, head);
    }
}

static void stream_open(stream *s, const path_opts *po)
{
    memset(s, 0, sizeof(*s));
    s->fd = -1;
    uint64_t deadline = now_ns() + (uint64_t)BENCH_CONNECT_SECS * 1000000000u;
    for (;;) {
        s->fd = tcp_dial(po->target);
        if (s->fd >= 0)
            break;
        if (now_ns() > deadline)
            die("cannot connect to %s: %s", po->target, strerror(errno));
        sleep_s(0.05);
    }
    if (po->tls) {
        s->ssl = SSL_new(po->ctx);
        if (!s->ssl)
            die("SSL_new: %s", ssl_errstr());
        SSL_set_fd(s->ssl, s->fd);
        SSL_set_tlsext_host_name(s->ssl, po->sni);
        SSL_set1_host(s->ssl, po->sni);
        if (SSL_connect(s->ssl) != 1)
            die("TLS handshake with %s failed: %s", po->target, ssl_errstr());
    }
    if (po->connect)
        stream_connect_tunnel(s, po);
}

static void read_token(const char *file, char *out, size_t cap)
{
    FILE *f = fopen(file, "r");
    if (!f)
        die("cannot read %s: %s", file, strerror(errno));
    if (!fgets(out, (int)cap, f))
        out[0] = '\0';
    fclose(f);
    out[strcspn(out, "\r\n")] = '\0';
    if (out[0] == '\0')
        die("%s holds no token", file);
}

/*
 * Parses the path options at argv[*i] (advancing *i past a value). Returns 1 if
 * argv[*i] was a path option, 0 if not.
 */
static int path_opt(path_opts *po, int argc, char **argv, int *i)
{
    const char *a = argv[*i];
    const char *v = *i + 1 < argc ? argv[*i + 1] : NULL;
    if (strcmp(a, "--tls") == 0) {
        po->tls = 1;
        return 1;
    }
    const char **dst = NULL;
    if (strcmp(a, "--target") == 0)
        dst = &po->target;
    else if (strcmp(a, "--ca") == 0)
        dst = &po->ca;
    else if (strcmp(a, "--sni") == 0)
        dst = &po->sni;
    else if (strcmp(a, "--connect") == 0)
        dst = &po->connect;
    else if (strcmp(a, "--token-file") == 0) {
        if (!v)
            die("%s needs a value", a);
        read_token(v, po->token, sizeof(po->token));
        (*i)++;
        return 1;
    } else
        return 0;
    if (!v)
        die("%s needs a value", a);
    *dst = v;
    (*i)++;
    return 1;
}

static void path_setup(path_opts *po)
{
    if (!po->target)
        die("--target HOST:PORT is required");
    if (po->connect && po->token[0] == '\0')
        die("--connect needs --token-file");
    if (!po->sni)
        po->sni = "localhost";
    if (!po->tls)
        return;
    po->ctx = SSL_CTX_new(TLS_client_method());
    if (!po->ctx)
        die("SSL_CTX_new: %s", ssl_errstr());
    /* TLS 1.2 on every path: wolfpackd's mbedTLS 2.28 speaks nothing newer, and the
     * stunnel relay must be measured with the same record protocol. */
    SSL_CTX_set_min_proto_version(po->ctx, TLS1_2_VERSION);
    SSL_CTX_set_max_proto_version(po->ctx, TLS1_2_VERSION);
    if (po->ca) {
        if (SSL_CTX_load_verify_locations(po->ctx, po->ca, NULL) != 1)
            die("cannot load CA %s: %s", po->ca, ssl_errstr());
        SSL_CTX_set_verify(po->ctx, SSL_VERIFY_PEER, NULL);
    } else {
        SSL_CTX_set_verify(po->ctx, SSL_VERIFY_NONE, NULL);
    }
}

static void path_json(const path_opts *po, const stream *s)
{
    printf("\"tls\":%s", po->tls ? "true" : "false");
    if (s->ssl)
        printf(",\"tls_version\":\"%s\",\"cipher\":\"%s\"", SSL_get_version(s->ssl),
               SSL_get_cipher_name(s->ssl));
}

/* ---- bulk ---- */

typedef struct watch {
    char name[32];
    long pid; /* 0 = this process */
    double cpu_a, cpu_b;
} watch;

static atomic_int g_stop;
static uint8_t g_chunk[BENCH_CHUNK];

/* CPU seconds (user + system) of a process, all threads; -1 if unreadable. */
static double proc_cpu(long pid)
{
    if (pid == 0) {
        struct rusage ru;
        getrusage(RUSAGE_SELF, &ru);
        return (double)ru.ru_utime.tv_sec + (double)ru.ru_utime.tv_usec / 1e6 +
               (double)ru.ru_stime.tv_sec + (double)ru.ru_stime.tv_usec / 1e6;
    }
    char path[64], buf[1024];
    snprintf(path, sizeof(path), "/proc/%ld/stat", pid);
    FILE *f = fopen(path, "r");
    if (!f)
        return -1;
    size_t n = fread(buf, 1, sizeof(buf) - 1, f);
    fclose(f);
    buf[n] = '\0';
    char *p = strrchr(buf, ')'); /* the command name may contain spaces */
    if (!p)
        return -1;
    unsigned long ut = 0, st = 0;
    /* after ") ": state(3) ppid pgrp session tty tpgid flags minflt cminflt majflt cmajflt
     * utime(14) stime(15) */
    if (sscanf(p + 2, "%*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %lu %lu", &ut, &st) != 2)
        return -1;
    return (double)(ut + st) / (double)sysconf(_SC_CLK_TCK);
}

static void sink_stats(int ctl, uint64_t *bytes, uint64_t *ns)
{
    if (send_all(ctl, "stats\n", 6) < 0)
        die("stats: control connection failed");
    char line[128];
    size_t have = 0;
    while (have == 0 || line[have - 1] != '\n') {
        if (have == sizeof(line) - 1)
            die("stats: answer too long");
        ssize_t r = recv(ctl, line + have, sizeof(line) - 1 - have, 0);
        if (r <= 0)
            die("stats: control connection closed");
        have += (size_t)r;
    }
    line[have] = '\0';
    if (sscanf(line, "%" SCNu64 " %" SCNu64, bytes, ns) != 2)
        die("stats: bad answer '%s'", line);
}

static void *bulk_sender(void *arg)
{
    stream *s = arg;
    while (!atomic_load_explicit(&g_stop, memory_order_relaxed)) {
        if (stream_write(s, g_chunk, sizeof(g_chunk)) < 0) {
            if (!atomic_load(&g_stop))
                s->failed = 1;
            break;
        }
    }
    return NULL;
}

static int cmd_bulk(int argc, char **argv)
{
    path_opts po;
    memset(&po, 0, sizeof(po));
    const char *stats = NULL;
    int nstreams = 1;
    double warmup = 1.0, secs = 3.0;
    static watch w[BENCH_MAX_WATCH + 1];
    int nw = 0;
    snprintf(w[nw].name, sizeof(w[nw].name), "client");
    w[nw++].pid = 0;
    for (int i = 0; i < argc; i++) {
        if (path_opt(&po, argc, argv, &i))
            continue;
        const char *a = argv[i];
        if (i + 1 >= argc)
            die("bulk: unknown argument '%s' (or missing value)", a);
        const char *v = argv[++i];
        if (strcmp(a, "--stats") == 0)
            stats = v;
        else if (strcmp(a, "--streams") == 0)
            nstreams = atoi(v);
        else if (strcmp(a, "--warmup") == 0)
            warmup = atof(v);
        else if (strcmp(a, "--seconds") == 0)
            secs = atof(v);
        else if (strcmp(a, "--watch") == 0) {
            const char *eq = strchr(v, '=');
            if (!eq || eq == v || (size_t)(eq - v) >= sizeof(w[0].name) || nw > BENCH_MAX_WATCH)
                die("bad --watch '%s' (want NAME=PID, at most %d)", v, BENCH_MAX_WATCH);
            memcpy(w[nw].name, v, (size_t)(eq - v));
            w[nw].name[eq - v] = '\0';
            w[nw].pid = atol(eq + 1);
            if (w[nw].pid <= 0)
                die("bad pid in --watch '%s'", v);
            nw++;
        } else
            die("bulk: unknown argument '%s'", a);
    }
    if (!stats)
        die("bulk: --stats HOST:PORT (the sink's control port) is required");
    if (nstreams < 1 || nstreams > BENCH_MAX_STREAMS)
        die("bulk: --streams must be 1..%d", BENCH_MAX_STREAMS);
    if (!(warmup >= 0 && warmup < 600) || !(secs > 0 && secs < 600))
        die("bulk: --warmup/--seconds out of range");
    path_setup(&po);
    for (size_t i = 0; i < sizeof(g_chunk); i++)
        g_chunk[i] = (uint8_t)(i * 131u + 7u);

    int ctl = tcp_dial(stats);
    if (ctl < 0)
        die("cannot reach the sink's control port %s", stats);
    static stream st[BENCH_MAX_STREAMS];
    for (int i = 0; i < nstreams; i++)
        stream_open(&st[i], &po);
    for (int i = 0; i < nstreams; i++)
        if (pthread_create(&st[i].th, NULL, bulk_sender, &st[i]) != 0)
            die("pthread_create failed");

    sleep_s(warmup);
    uint64_t b0, t0, b1, t1;
    sink_stats(ctl, &b0, &t0);
    for (int i = 0; i < nw; i++)
        w[i].cpu_a = proc_cpu(w[i].pid);
    sleep_s(secs);
    sink_stats(ctl, &b1, &t1);
    for (int i = 0; i < nw; i++)
        w[i].cpu_b = proc_cpu(w[i].pid);

    atomic_store(&g_stop, 1);
    for (int i = 0; i < nstreams; i++)
        shutdown(st[i].fd, SHUT_RDWR); /* unblocks a sender stuck in send() */
    int failed = 0;
    for (int i = 0; i < nstreams; i++) {
        pthread_join(st[i].th, NULL);
        failed |= st[i].failed;
    }
    double dt = (double)(t1 - t0) / 1e9;
    double mbps = dt > 0 ? (double)(b1 - b0) / dt / 1e6 : 0;
    printf("{\"mode\":\"bulk\",\"streams\":%d,", nstreams);
    path_json(&po, &st[0]);
    printf(",\"bytes\":%" PRIu64 ",\"seconds\":%.3f,\"MBps\":%.1f,\"failed\":%s,\"cpu\":{", b1 - b0,
           dt, mbps, failed ? "true" : "false");
    for (int i = 0; i < nw; i++) {
        double c =
            (w[i].cpu_a < 0 || w[i].cpu_b < 0 || dt <= 0) ? -1 : (w[i].cpu_b - w[i].cpu_a) / dt;
        printf("%s\"%s\":%.3f", i ? "," : "", w[i].name, c);
    }
    printf("}}\n");
    for (int i = 0; i < nstreams; i++)
        stream_close(&st[i]);
    close(ctl);
    if (po.ctx)
        SSL_CTX_free(po.ctx);
    if (failed)
        fprintf(stderr, "wp_bench: a stream failed during the measurement\n");
    return failed ? 2 : 0;
}

/* ---- echo latency ---- */

static int cmp_u64(const void *a, const void *b)
{
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return x < y ? -1 : x > y;
}

/* Nearest-rank percentile of sorted v[0..n). */
static double pct_us(const uint64_t *v, size_t n, double p)
{
    size_t k = (size_t)(p / 100.0 * (double)n + 0.999999);
    if (k < 1)
        k = 1;
    if (k > n)
        k = n;
    return (double)v[k - 1] / 1000.0;
}

static int cmd_echo(int argc, char **argv)
{
    path_opts po;
    memset(&po, 0, sizeof(po));
    long size = 64, samples = 2000, warm = 200;
    for (int i = 0; i < argc; i++) {
        if (path_opt(&po, argc, argv, &i))
            continue;
        const char *a = argv[i];
        if (i + 1 >= argc)
            die("echo: unknown argument '%s' (or missing value)", a);
        const char *v = argv[++i];
        if (strcmp(a, "--size") == 0)
            size = atol(v);
        else if (strcmp(a, "--samples") == 0)
            samples = atol(v);
        else if (strcmp(a, "--warmup") == 0)
            warm = atol(v);
        else
            die("echo: unknown argument '%s'", a);
    }
    if (size < 1 || size > BENCH_MAX_MSG)
        die("echo: --size must be 1..%d", BENCH_MAX_MSG);
    if (samples < 1 || samples > BENCH_MAX_SAMPLES || warm < 0 || warm > BENCH_MAX_SAMPLES)
        die("echo: --samples 1..%d, --warmup 0..%d", BENCH_MAX_SAMPLES, BENCH_MAX_SAMPLES);
    path_setup(&po);
    uint8_t *msg = malloc((size_t)size), *got = malloc((size_t)size);
    uint64_t *rtt = malloc(sizeof(uint64_t) * (size_t)samples);
    if (!msg || !got || !rtt)
        die("out of memory");
    stream s;
    stream_open(&s, &po);
    int failed = 0;
    for (long i = 0; i < warm + samples; i++) {
        for (long j = 0; j < size; j++)
            msg[j] = (uint8_t)(i + j);
        uint64_t t = now_ns();
        if (stream_write(&s, msg, (size_t)size) < 0 ||
            stream_read_exact(&s, got, (size_t)size) < 0) {
            fprintf(stderr, "wp_bench: echo stream failed at sample %ld\n", i);
            failed = 1;
            break;
        }
        uint64_t d = now_ns() - t;
        if (memcmp(msg, got, (size_t)size) != 0) {
            fprintf(stderr, "wp_bench: echo answer differs at sample %ld\n", i);
            failed = 1;
            break;
        }
        if (i >= warm)
            rtt[i - warm] = d;
    }
    if (!failed) {
        qsort(rtt, (size_t)samples, sizeof(uint64_t), cmp_u64);
        double sum = 0;
        for (long i = 0; i < samples; i++)
            sum += (double)rtt[i];
        printf("{\"mode\":\"echo\",\"size\":%ld,\"samples\":%ld,", size, samples);
        path_json(&po, &s);
        printf(",\"min_us\":%.1f,\"p50_us\":%.1f,\"p90_us\":%.1f,\"p99_us\":%.1f,\"max_us\":%.1f,"
               "\"mean_us\":%.1f}\n",
               (double)rtt[0] / 1000.0, pct_us(rtt, (size_t)samples, 50),
               pct_us(rtt, (size_t)samples, 90), pct_us(rtt, (size_t)samples, 99),
               (double)rtt[samples - 1] / 1000.0, sum / (double)samples / 1000.0);
    }
    stream_close(&s);
    if (po.ctx)
        SSL_CTX_free(po.ctx);
    free(msg);
    free(got);
    free(rtt);
    return failed ? 2 : 0;
}

static void usage(void)
{
    fputs("usage: wp_bench serve [--host IP]\n"
          "       wp_bench bulk --target HOST:PORT --stats HOST:PORT [--streams N]\n"
          "                     [--warmup S] [--seconds S] [--watch NAME=PID]... [path]\n"
          "       wp_bench echo --target HOST:PORT [--size N] [--samples N] [--warmup N] [path]\n"
          "path:  [--tls [--ca FILE] [--sni NAME]] [--connect NODE:SERVICE --token-file FILE]\n",
          stderr);
}

int main(int argc, char **argv)
{
    signal(SIGPIPE, SIG_IGN);
    setvbuf(stdout, NULL, _IOLBF, 0);
    if (argc < 2) {
        usage();
        return 1;
    }
    if (strcmp(argv[1], "serve") == 0)
        return cmd_serve(argc - 2, argv + 2);
    if (strcmp(argv[1], "bulk") == 0)
        return cmd_bulk(argc - 2, argv + 2);
    if (strcmp(argv[1], "echo") == 0)
        return cmd_echo(argc - 2, argv + 2);
    usage();
    return 1;
}
