/*
 * The load generator of benchmarks/pubsub.py: native, so that the clients are not what caps
 * the figure. One thread, epoll, plain TCP on 127.0.0.1.
 *
 *   pubsub_load PORT SUBSCRIBERS MODE VALUE WARMUP DURATION SIZE
 *
 * Opens SUBSCRIBERS WebSocket connections and one publisher connection to PORT (RFC 6455
 * opening handshake; the server answers 101), sends "join" on each subscriber (a masked text
 * frame) and waits for its "joined". Then the publisher sends "p SEQ T ..." text messages of
 * SIZE bytes, T being CLOCK_MONOTONIC in ns; the server publishes each to every subscriber.
 *
 *   MODE window: VALUE messages in flight: the next is sent when one has reached every
 *                subscriber (deliveries per second at saturation)
 *   MODE rate:   VALUE messages per second, sent on schedule (latency at a given load)
 *
 * Counts the deliveries in DURATION seconds after WARMUP seconds, and each delivery's latency
 * (receipt time minus T: publish to delivery, on one clock). Prints one JSON object.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>
#include <arpa/inet.h>

#define BUFFER (256 * 1024)
#define SEQS (1 << 16)

typedef struct {
    int fd;
    size_t used;
    unsigned char *buffer;
} conn_t;

static uint64_t now_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

static void die(const char *what) {
    fprintf(stderr, "pubsub_load: %s: %s\n", what, strerror(errno));
    exit(2);
}

static int dial(int port) {
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    if (fd < 0) die("socket");
    struct sockaddr_in addr = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (connect(fd, (struct sockaddr *)&addr, sizeof addr) < 0) die("connect");
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    return fd;
}

static void send_all(int fd, const void *data, size_t size) {
    const char *p = data;
    while (size) {
        ssize_t n = send(fd, p, size, MSG_NOSIGNAL);
        if (n < 0) {
            if (errno == EINTR) continue;
            die("send");
        }
        p += n;
        size -= (size_t)n;
    }
}

/* A masked text frame (a client masks what it sends, RFC 6455 5.3), with a fixed key. */
static size_t text_frame(unsigned char *out, const char *text, size_t size) {
    static const unsigned char key[4] = {0x12, 0x34, 0x56, 0x78};
    size_t head = 2;
    out[0] = 0x81;
    if (size < 126) {
        out[1] = 0x80 | (unsigned char)size;
    } else {
        out[1] = 0x80 | 126;
        out[2] = (unsigned char)(size >> 8);
        out[3] = (unsigned char)size;
        head = 4;
    }
    memcpy(out + head, key, 4);
    for (size_t i = 0; i < size; i++) out[head + 4 + i] = (unsigned char)text[i] ^ key[i & 3];
    return head + 4 + size;
}

static void handshake(int fd) {
    static const char request[] =
        "GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n";
    send_all(fd, request, sizeof request - 1);
    char head[4096];
    size_t used = 0;
    while (used < sizeof head - 1) {
        ssize_t n = recv(fd, head + used, 1, 0); /* byte by byte: nothing after the head */
        if (n <= 0) die("handshake");
        used += (size_t)n;
        head[used] = 0;
        if (used >= 4 && memcmp(head + used - 4, "\r\n\r\n", 4) == 0) break;
    }
    if (strncmp(head, "HTTP/1.1 101", 12) != 0) {
        fprintf(stderr, "pubsub_load: not upgraded: %.80s\n", head);
        exit(2);
    }
}

/* Read one small unmasked frame (blocking): for the "joined" answer. */
static void read_reply(int fd, const char *expected) {
    unsigned char head[2];
    if (recv(fd, head, 2, MSG_WAITALL) != 2) die("reply");
    size_t size = head[1] & 0x7F;
    char payload[128];
    if (size >= sizeof payload || recv(fd, payload, size, MSG_WAITALL) != (ssize_t)size)
        die("reply payload");
    payload[size] = 0;
    if (strcmp(payload, expected) != 0) {
        fprintf(stderr, "pubsub_load: expected %s, got %s\n", expected, payload);
        exit(2);
    }
}

static int compare(const void *a, const void *b) {
    uint32_t x = *(const uint32_t *)a, y = *(const uint32_t *)b;
    return (x > y) - (x < y);
}

int main(int argc, char **argv) {
    if (argc != 8) {
        fprintf(stderr, "usage: pubsub_load PORT SUBSCRIBERS window|rate VALUE WARMUP DURATION SIZE\n");
        return 2;
    }
    int port = atoi(argv[1]);
    int subscribers = atoi(argv[2]);
    int window_mode = strcmp(argv[3], "window") == 0;
    double value = atof(argv[4]);
    double warmup = atof(argv[5]), duration = atof(argv[6]);
    size_t size = (size_t)atoi(argv[7]);
    if (subscribers < 1 || value <= 0 || size < 40 || size > 4000) {
        fprintf(stderr, "pubsub_load: bad arguments\n");
        return 2;
    }
    struct rlimit limit;
    getrlimit(RLIMIT_NOFILE, &limit);
    limit.rlim_cur = limit.rlim_max;
    setrlimit(RLIMIT_NOFILE, &limit);

    unsigned char frame[4200];
    conn_t *conns = calloc((size_t)subscribers, sizeof *conns);
    int epoll = epoll_create1(0);
    for (int i = 0; i < subscribers; i++) {
        int fd = dial(port);
        handshake(fd);
        send_all(fd, frame, text_frame(frame, "join", 4));
        read_reply(fd, "joined");
        conns[i].fd = fd;
        conns[i].buffer = malloc(BUFFER);
        struct epoll_event event = {.events = EPOLLIN, .data.ptr = &conns[i]};
        if (epoll_ctl(epoll, EPOLL_CTL_ADD, fd, &event) < 0) die("epoll_ctl");
    }
    int publisher = dial(port);
    handshake(publisher);

    static uint32_t remaining[SEQS];
    size_t capacity = 64u << 20, recorded = 0;
    uint32_t *latencies = malloc(capacity * sizeof *latencies);
    uint64_t start = now_ns();
    uint64_t measure_from = start + (uint64_t)(warmup * 1e9);
    uint64_t measure_to = measure_from + (uint64_t)(duration * 1e9);
    uint64_t deliveries = 0, late = 0, published = 0, completed = 0, measured_published = 0;
    uint64_t in_flight = 0, next_due = start, progress = start;
    int stalled = 0;
    uint64_t interval = window_mode ? 0 : (uint64_t)(1e9 / value);
    char text[4100];
    struct epoll_event events[256];

    for (;;) {
        uint64_t now = now_ns();
        if (now >= measure_to) break;
        if (window_mode && now - progress > 3000000000ull) { /* a message never completed */
            stalled = 1;
            break;
        }
        /* Publish: to the window, or on schedule. */
        while (window_mode ? in_flight < (uint64_t)value : now >= next_due) {
            uint32_t seq = (uint32_t)(published & (SEQS - 1));
            if (remaining[seq]) break; /* the ring wrapped onto a message still arriving */
            int n = snprintf(text, sizeof text, "p %u %llu ", seq, (unsigned long long)now_ns());
            memset(text + n, 'x', size - (size_t)n);
            send_all(publisher, frame, text_frame(frame, text, size));
            remaining[seq] = (uint32_t)subscribers;
            published++;
            in_flight++;
            if (now >= measure_from) measured_published++;
            next_due += interval;
            if (!window_mode && next_due < now - 1000000000ull) next_due = now; /* far behind */
        }
        int timeout = 1;
        if (!window_mode && next_due > now) timeout = (int)((next_due - now) / 1000000);
        int ready = epoll_wait(epoll, events, 256, timeout);
        if (ready < 0 && errno != EINTR) die("epoll_wait");
        for (int e = 0; e < ready; e++) {
            conn_t *c = events[e].data.ptr;
            ssize_t n = recv(c->fd, c->buffer + c->used, BUFFER - c->used, 0);
            if (n <= 0) {
                if (n < 0 && (errno == EAGAIN || errno == EINTR)) continue;
                fprintf(stderr, "pubsub_load: a subscriber's connection closed\n");
                return 2;
            }
            c->used += (size_t)n;
            uint64_t received = now_ns();
            size_t at = 0;
            while (c->used - at >= 2) {
                unsigned char *f = c->buffer + at;
                size_t length = f[1] & 0x7F, head = 2;
                if (length == 126) {
                    if (c->used - at < 4) break;
                    length = ((size_t)f[2] << 8) | f[3];
                    head = 4;
                } else if (length == 127) {
                    fprintf(stderr, "pubsub_load: unexpected large frame\n");
                    return 2;
                }
                if (c->used - at < head + length) break;
                if ((f[0] & 0x0F) == 1 && length > 2 && f[head] == 'p') {
                    unsigned seq = 0;
                    unsigned long long sent = 0;
                    char copy[64];
                    size_t take = length < 63 ? length : 63;
                    memcpy(copy, f + head, take);
                    copy[take] = 0;
                    if (sscanf(copy, "p %u %llu", &seq, &sent) == 2 && seq < SEQS) {
                        if (received >= measure_from && sent >= measure_from) {
                            deliveries++;
                            if (recorded < capacity)
                                latencies[recorded++] = (uint32_t)((received - sent) / 1000);
                        } else if (received >= measure_from) {
                            late++;
                        }
                        if (remaining[seq] && --remaining[seq] == 0) {
                            completed++;
                            in_flight--;
                            progress = received;
                        }
                    }
                }
                at += head + length;
            }
            memmove(c->buffer, c->buffer + at, c->used - at);
            c->used -= at;
        }
    }
    double seconds = (double)(now_ns() - measure_from) / 1e9;
    qsort(latencies, recorded, sizeof *latencies, compare);
    uint32_t p50 = recorded ? latencies[recorded / 2] : 0;
    uint32_t p99 = recorded ? latencies[(size_t)((double)recorded * 0.99)] : 0;
    uint32_t max = recorded ? latencies[recorded - 1] : 0;
    printf("{\"deliveries\": %llu, \"seconds\": %.3f, \"deliveries_per_s\": %.0f, "
           "\"published\": %llu, \"completed\": %llu, \"p50_us\": %u, \"p99_us\": %u, "
           "\"max_us\": %u, \"expected\": %llu, \"stalled\": %s}\n",
           (unsigned long long)deliveries, seconds, (double)deliveries / seconds,
           (unsigned long long)measured_published, (unsigned long long)completed, p50, p99, max,
           (unsigned long long)(measured_published * (uint64_t)subscribers),
           stalled ? "true" : "false");
    (void)late;
    return 0;
}
