/*
 * wsload: a small WebSocket load generator for bench/ws.py (built with gcc at bench time).
 *
 * One thread, epoll, N non-blocking clients. Each client does the RFC 6455 handshake, then
 * loops: send one masked frame, wait for the whole echoed frame, record the round trip.
 * A Python client would be the bottleneck at these rates; this one is not.
 *
 *   wsload echo HOST PORT PATH CLIENTS SIZE text|binary SECONDS [WARMUP_SECONDS]
 *       prints one JSON line: messages, seconds, msgs_per_s, p50_us, p99_us, errors,
 *       all_messages (warm-up included, for CPU time per message)
 *   wsload idle HOST PORT PATH CLIENTS
 *       opens CLIENTS connections, prints "ready <n>" when all are upgraded, then holds them
 *       until stdin closes (the driver measures the server's RSS meanwhile)
 *
 * Bounded: every run stops by itself (SECONDS); idle mode stops on stdin EOF or after 120 s.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

enum { ST_HANDSHAKE, ST_OPEN, ST_DEAD };

typedef struct {
    int fd;
    int state;
    /* outgoing: the current frame and how much of it is written */
    size_t out_off;
    /* handshake response accumulation */
    char hs[1024];
    size_t hs_len;
    /* incoming frame parsing */
    unsigned char hdr[14];
    size_t hdr_len, hdr_need;
    uint64_t payload_left;
    int in_payload;
    double sent_at;
} client_t;

static unsigned char *frame;
static size_t frame_len;
static double *lat;
static size_t lat_n, lat_cap;
static long errors;

static double now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec / 1e9;
}

static int cmp_d(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

static void build_frame(size_t size, int binary) {
    size_t hlen = size < 126 ? 2 : (size < 65536 ? 4 : 10);
    frame_len = hlen + 4 + size;
    frame = malloc(frame_len);
    frame[0] = 0x80 | (binary ? 0x2 : 0x1);
    if (size < 126) {
        frame[1] = 0x80 | (unsigned char)size;
    } else if (size < 65536) {
        frame[1] = 0x80 | 126;
        frame[2] = (unsigned char)(size >> 8);
        frame[3] = (unsigned char)size;
    } else {
        frame[1] = 0x80 | 127;
        for (int i = 0; i < 8; i++) frame[2 + i] = (unsigned char)((uint64_t)size >> (56 - 8 * i));
    }
    unsigned char mask[4] = {0x37, 0xfa, 0x21, 0x3d};
    memcpy(frame + hlen, mask, 4);
    for (size_t i = 0; i < size; i++) {
        unsigned char c = (unsigned char)('a' + (i % 26)); /* ASCII: valid UTF-8 for text */
        frame[hlen + 4 + i] = c ^ mask[i % 4];
    }
}

static int open_client(const char *host, int port, const char *path, client_t *c) {
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK, 0);
    if (fd < 0) return -1;
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    struct sockaddr_in sa = {0};
    sa.sin_family = AF_INET;
    sa.sin_port = htons(port);
    inet_pton(AF_INET, host, &sa.sin_addr);
    if (connect(fd, (struct sockaddr *)&sa, sizeof sa) < 0 && errno != EINPROGRESS) {
        close(fd);
        return -1;
    }
    /* wait for the connect to finish so the request can go out in one write */
    struct pollfd p = {fd, POLLOUT, 0};
    if (poll(&p, 1, 5000) != 1) {
        close(fd);
        return -1;
    }
    char req[512];
    int n = snprintf(req, sizeof req,
                     "GET %s HTTP/1.1\r\nHost: %s:%d\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                     "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n",
                     path, host, port);
    if (write(fd, req, n) != n) {
        close(fd);
        return -1;
    }
    memset(c, 0, sizeof *c);
    c->fd = fd;
    c->state = ST_HANDSHAKE;
    c->hdr_need = 2;
    return 0;
}

/* returns 1 when the handshake finished, 0 when more is needed, -1 on failure */
static int read_handshake(client_t *c) {
    for (;;) {
        ssize_t r = read(c->fd, c->hs + c->hs_len, sizeof c->hs - 1 - c->hs_len);
        if (r < 0) return (errno == EAGAIN) ? 0 : -1;
        if (r == 0) return -1;
        c->hs_len += r;
        c->hs[c->hs_len] = 0;
        char *end = strstr(c->hs, "\r\n\r\n");
        if (end) {
            if (strncmp(c->hs, "HTTP/1.1 101", 12) != 0) return -1;
            /* the echo never starts before we send, so nothing follows the head */
            c->state = ST_OPEN;
            return 1;
        }
        if (c->hs_len >= sizeof c->hs - 1) return -1;
    }
}

static int write_frame(client_t *c) {
    while (c->out_off < frame_len) {
        ssize_t w = write(c->fd, frame + c->out_off, frame_len - c->out_off);
        if (w < 0) return errno == EAGAIN ? 0 : -1;
        c->out_off += w;
    }
    return 1;
}

/* Consume echoed frames; returns number of complete messages seen, -1 on error. */
static int read_frames(client_t *c, unsigned char *buf, size_t bufsz) {
    int done = 0;
    for (;;) {
        ssize_t r = read(c->fd, buf, bufsz);
        if (r < 0) return errno == EAGAIN ? done : -1;
        if (r == 0) return -1;
        size_t i = 0;
        while (i < (size_t)r) {
            if (c->in_payload) {
                size_t take = (size_t)r - i;
                if (take > c->payload_left) take = c->payload_left;
                c->payload_left -= take;
                i += take;
                if (c->payload_left == 0) {
                    c->in_payload = 0;
                    c->hdr_len = 0;
                    c->hdr_need = 2;
                    done++;
                }
                continue;
            }
            c->hdr[c->hdr_len++] = buf[i++];
            if (c->hdr_len == 2) {
                if ((c->hdr[0] & 0x0f) == 0x8) return -1; /* server closed */
                unsigned l = c->hdr[1] & 0x7f;
                c->hdr_need = 2 + (l == 126 ? 2 : l == 127 ? 8 : 0);
            }
            if (c->hdr_len == c->hdr_need) {
                unsigned l = c->hdr[1] & 0x7f;
                uint64_t len = l;
                if (l == 126) len = ((uint64_t)c->hdr[2] << 8) | c->hdr[3];
                if (l == 127) {
                    len = 0;
                    for (int k = 0; k < 8; k++) len = (len << 8) | c->hdr[2 + k];
                }
                c->payload_left = len;
                if (len == 0) {
                    c->hdr_len = 0;
                    c->hdr_need = 2;
                    done++;
                } else {
                    c->in_payload = 1;
                }
            }
        }
    }
}

static int run_echo(const char *host, int port, const char *path, int n, double secs, double warm) {
    client_t *cs = calloc(n, sizeof *cs);
    int ep = epoll_create1(0);
    for (int i = 0; i < n; i++) {
        if (open_client(host, port, path, &cs[i]) < 0) {
            fprintf(stderr, "connect failed for client %d\n", i);
            return 1;
        }
        struct epoll_event ev = {.events = EPOLLIN, .data.u32 = i};
        epoll_ctl(ep, EPOLL_CTL_ADD, cs[i].fd, &ev);
    }
    size_t bufsz = 256 * 1024;
    unsigned char *buf = malloc(bufsz);
    struct epoll_event evs[256];
    double t0 = now(), measure_from = t0 + warm, stop = measure_from + secs;
    long measured = 0, all = 0;
    int live = n;
    while (live > 0) {
        double t = now();
        if (t >= stop) break;
        int k = epoll_wait(ep, evs, 256, 100);
        for (int e = 0; e < k; e++) {
            client_t *c = &cs[evs[e].data.u32];
            if (c->state == ST_DEAD) continue;
            if (c->state == ST_HANDSHAKE) {
                int h = read_handshake(c);
                if (h < 0) goto dead;
                if (h == 0) continue;
                c->sent_at = now();
                c->out_off = 0;
                int w = write_frame(c);
                if (w < 0) goto dead;
                if (w == 0) {
                    struct epoll_event ev = {.events = EPOLLIN | EPOLLOUT, .data.u32 = evs[e].data.u32};
                    epoll_ctl(ep, EPOLL_CTL_MOD, c->fd, &ev);
                }
                continue;
            }
            if (evs[e].events & EPOLLOUT) {
                int w = write_frame(c);
                if (w < 0) goto dead;
                if (w == 1) {
                    struct epoll_event ev = {.events = EPOLLIN, .data.u32 = evs[e].data.u32};
                    epoll_ctl(ep, EPOLL_CTL_MOD, c->fd, &ev);
                }
            }
            if (evs[e].events & (EPOLLIN | EPOLLHUP | EPOLLERR)) {
                int got = read_frames(c, buf, bufsz);
                if (got < 0) goto dead;
                if (got > 0) {
                    double t1 = now();
                    all += got;
                    if (t1 >= measure_from) {
                        measured += got;
                        if (lat_n < lat_cap) lat[lat_n++] = t1 - c->sent_at;
                    }
                    c->sent_at = t1;
                    c->out_off = 0;
                    int w = write_frame(c);
                    if (w < 0) goto dead;
                    if (w == 0) {
                        struct epoll_event ev = {.events = EPOLLIN | EPOLLOUT, .data.u32 = evs[e].data.u32};
                        epoll_ctl(ep, EPOLL_CTL_MOD, c->fd, &ev);
                    }
                }
            }
            continue;
        dead:
            errors++;
            c->state = ST_DEAD;
            close(c->fd);
            live--;
        }
    }
    double elapsed = now() - measure_from;
    if (elapsed > secs) elapsed = secs;
    qsort(lat, lat_n, sizeof *lat, cmp_d);
    double p50 = lat_n ? lat[lat_n / 2] : 0, p99 = lat_n ? lat[(size_t)(lat_n * 0.99)] : 0;
    printf("{\"messages\": %ld, \"seconds\": %.3f, \"msgs_per_s\": %.1f, \"p50_us\": %.1f, "
           "\"p99_us\": %.1f, \"errors\": %ld, \"all_messages\": %ld}\n",
           measured, elapsed, measured / elapsed, p50 * 1e6, p99 * 1e6, errors, all);
    for (int i = 0; i < n; i++)
        if (cs[i].state != ST_DEAD) close(cs[i].fd);
    return errors ? 2 : 0;
}

static int run_idle(const char *host, int port, const char *path, int n) {
    client_t *cs = calloc(n, sizeof *cs);
    int ok = 0;
    int ep = epoll_create1(0);
    /* open in batches so the listen backlog never overflows */
    int opened = 0, pending = 0;
    struct epoll_event evs[256];
    double deadline = now() + 60;
    while ((opened < n || pending > 0) && now() < deadline) {
        while (opened < n && pending < 200) {
            if (open_client(host, port, path, &cs[opened]) < 0) {
                fprintf(stderr, "connect failed at %d\n", opened);
                return 1;
            }
            struct epoll_event ev = {.events = EPOLLIN, .data.u32 = opened};
            epoll_ctl(ep, EPOLL_CTL_ADD, cs[opened].fd, &ev);
            opened++;
            pending++;
        }
        int k = epoll_wait(ep, evs, 256, 100);
        for (int e = 0; e < k; e++) {
            client_t *c = &cs[evs[e].data.u32];
            if (c->state != ST_HANDSHAKE) continue;
            int h = read_handshake(c);
            if (h != 0) {
                pending--;
                epoll_ctl(ep, EPOLL_CTL_DEL, c->fd, NULL);
                if (h > 0) ok++;
                else c->state = ST_DEAD, errors++;
            }
        }
    }
    printf("ready %d\n", ok);
    fflush(stdout);
    struct pollfd p = {0, POLLIN, 0};
    char b[64];
    while (poll(&p, 1, 120000) == 1 && read(0, b, sizeof b) > 0) {
    }
    return 0;
}

int main(int argc, char **argv) {
    if (argc >= 9 && strcmp(argv[1], "echo") == 0) {
        size_t size = strtoul(argv[6], NULL, 10);
        build_frame(size, strcmp(argv[7], "binary") == 0);
        lat_cap = 4 * 1000 * 1000;
        lat = malloc(lat_cap * sizeof *lat);
        double warm = argc >= 10 ? atof(argv[9]) : 1.0;
        return run_echo(argv[2], atoi(argv[3]), argv[4], atoi(argv[5]), atof(argv[8]), warm);
    }
    if (argc >= 6 && strcmp(argv[1], "idle") == 0)
        return run_idle(argv[2], atoi(argv[3]), argv[4], atoi(argv[5]));
    fprintf(stderr,
            "usage: wsload echo HOST PORT PATH CLIENTS SIZE text|binary SECONDS [WARMUP]\n"
            "       wsload idle HOST PORT PATH CLIENTS\n");
    return 64;
}
