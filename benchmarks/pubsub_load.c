/*
 * The load generator of benchmarks/pubsub.py: native, so that the clients are not what caps
 * the figure. One thread, epoll, plain TCP on 127.0.0.1.
 *
 *   pubsub_load PORT SUBSCRIBERS MODE VALUE WARMUP DURATION SIZE PAUSE_MS [PID...]
 *
 * Opens SUBSCRIBERS WebSocket connections and one publisher connection to PORT (RFC 6455
 * opening handshake; the server answers 101), sends "join" on each subscriber (a masked text
 * frame) and waits for its "joined PID" (PID: the server process that has the connection),
 * and "who" on the publisher (answered "pid PID"). Then the publisher sends "p SEQ T ..."
 * text messages of SIZE bytes, T being CLOCK_REALTIME in ns; the server publishes each to
 * every subscriber.
 *
 *   MODE window: VALUE messages in flight: the next is sent when one has reached every
 *                subscriber (deliveries per second at saturation).
 *   MODE rate:   VALUE messages per second, sent on schedule (latency at a given load).
 *
 * When something arrives, this process waits PAUSE_MS (paced: at most until the next message
 * is due) before it reads everything that came: on a 2-core machine it shares the CPUs with
 * the servers, and read frame by frame as the frames came it took nearly as much CPU per
 * delivery as a server, at the moments they were delivering. At saturation each read then
 * brings several frames.
 *
 * Counts the deliveries in DURATION seconds after WARMUP seconds (paced: of the messages
 * sent in those seconds, waiting up to 2 s after them for the last deliveries), and the
 * latency of each: from T to when the frame reached the subscriber's socket (the kernel's
 * receive timestamp, SO_TIMESTAMPNS, of the last segment of the read that brought it: when
 * the server delivered it, whenever this process then got a CPU to read it), and to when
 * this process read it. Also the CPU time this process, each PID (the servers, the broker:
 * Linux's per-process CPU clocks) and the whole machine (/proc/stat: busy, stolen by the
 * hypervisor) used in exactly those DURATION seconds, and how many subscribers each PID has.
 * Prints one JSON object.
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
    clock_gettime(CLOCK_REALTIME, &ts); /* the clock of the kernel's receive timestamps */
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

/* Read small unmasked frames (blocking) until "PREFIX PID"; returns PID. Skips messages of a
 * previous run still on their way ("p ..."), at most a run's worth of them. */
static long read_reply(int fd, const char *prefix) {
    size_t length = strlen(prefix);
    for (int skipped = 0; skipped < SEQS; skipped++) {
        unsigned char head[4];
        if (recv(fd, head, 2, MSG_WAITALL) != 2) die("reply");
        size_t size = head[1] & 0x7F;
        if (size == 126) {
            if (recv(fd, head + 2, 2, MSG_WAITALL) != 2) die("reply");
            size = ((size_t)head[2] << 8) | head[3];
        }
        char payload[4200];
        if (size >= sizeof payload || (size && recv(fd, payload, size, MSG_WAITALL) != (ssize_t)size))
            die("reply payload");
        payload[size] = 0;
        if (size > 2 && payload[0] == 'p' && payload[1] == ' ') continue;
        if (strncmp(payload, prefix, length) != 0 || payload[length] != ' ') {
            fprintf(stderr, "pubsub_load: expected %s PID, got %.80s\n", prefix, payload);
            exit(2);
        }
        return atol(payload + length + 1);
    }
    fprintf(stderr, "pubsub_load: no answer to %s\n", prefix);
    exit(2);
}

#define MAX_PIDS 8

/* The machine's CPU time so far, from /proc/stat's "cpu" line, in clock ticks: [0] all of
 * it, [1] idle (idle + iowait), [2] stolen by the hypervisor (a virtual machine's "steal"). */
static void machine_ticks(unsigned long long *out) {
    unsigned long long f[8] = {0};
    out[0] = out[1] = out[2] = 0;
    FILE *stat = fopen("/proc/stat", "r");
    if (!stat) return;
    if (fscanf(stat, "cpu %llu %llu %llu %llu %llu %llu %llu %llu", &f[0], &f[1], &f[2], &f[3],
               &f[4], &f[5], &f[6], &f[7]) == 8) {
        for (int i = 0; i < 8; i++) out[0] += f[i];
        out[1] = f[3] + f[4];
        out[2] = f[7];
    }
    fclose(stat);
}

/* CPU seconds used so far by each of the processes (and this one, last). */
static void cpu_times(int count, const pid_t *pids, double *out) {
    for (int i = 0; i <= count; i++) {
        clockid_t clock = CLOCK_PROCESS_CPUTIME_ID;
        struct timespec ts = {0, 0};
        if (i < count && clock_getcpuclockid(pids[i], &clock) != 0) {
            out[i] = -1;
            continue;
        }
        out[i] = clock_gettime(clock, &ts) == 0 ? (double)ts.tv_sec + (double)ts.tv_nsec / 1e9 : -1;
    }
}

static int compare(const void *a, const void *b) {
    uint32_t x = *(const uint32_t *)a, y = *(const uint32_t *)b;
    return (x > y) - (x < y);
}

int main(int argc, char **argv) {
    if (argc < 9 || argc > 9 + MAX_PIDS) {
        fprintf(stderr, "usage: pubsub_load PORT SUBSCRIBERS window|rate VALUE WARMUP DURATION SIZE PAUSE_MS [PID...]\n");
        return 2;
    }
    int pid_count = argc - 9;
    double pause_ms = atof(argv[8]);
    pid_t pids[MAX_PIDS];
    long split[MAX_PIDS] = {0};
    for (int i = 0; i < pid_count; i++) pids[i] = (pid_t)atol(argv[9 + i]);
    double cpu_from[MAX_PIDS + 1], cpu_to[MAX_PIDS + 1];
    unsigned long long ticks_from[3] = {0}, ticks_to[3] = {0};
    int port = atoi(argv[1]);
    int subscribers = atoi(argv[2]);
    int window_mode = strcmp(argv[3], "window") == 0;
    double value = atof(argv[4]);
    double warmup = atof(argv[5]), duration = atof(argv[6]);
    size_t size = (size_t)atoi(argv[7]);
    if (subscribers < 1 || value <= 0 || size < 40 || size > 4000 || pause_ms < 0 || pause_ms > 100) {
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
        long owner = read_reply(fd, "joined");
        for (int p = 0; p < pid_count; p++)
            if (pids[p] == owner) split[p]++;
        int one = 1;
        if (setsockopt(fd, SOL_SOCKET, SO_TIMESTAMPNS, &one, sizeof one) < 0) die("SO_TIMESTAMPNS");
        conns[i].fd = fd;
        conns[i].buffer = malloc(BUFFER);
        struct epoll_event event = {.events = EPOLLIN, .data.ptr = &conns[i]};
        if (epoll_ctl(epoll, EPOLL_CTL_ADD, fd, &event) < 0) die("epoll_ctl");
    }
    int publisher = dial(port);
    handshake(publisher);
    send_all(publisher, frame, text_frame(frame, "who", 3));
    long publisher_pid = read_reply(publisher, "pid");

    static uint32_t remaining[SEQS];
    size_t capacity = 16u << 20, recorded = 0;
    uint32_t *latencies = malloc(capacity * sizeof *latencies); /* arrival - send */
    uint32_t *reads = malloc(capacity * sizeof *reads);         /* read - send */
    uint64_t start = now_ns();
    uint64_t measure_from = start + (uint64_t)(warmup * 1e9);
    uint64_t measure_to = measure_from + (uint64_t)(duration * 1e9);
    uint64_t deliveries = 0, late = 0, published = 0, completed = 0, measured_published = 0;
    uint64_t in_flight = 0, next_due = start, progress = start, reads_done = 0, stamped = 0;
    int stalled = 0, sampled = 0, ended = 0;
    static unsigned char measured_seq[SEQS];
    uint64_t outstanding = 0; /* messages sent in the window that have not reached everyone */
    uint64_t interval = window_mode ? 0 : (uint64_t)(1e9 / value);
    char text[4100];
    enum { EVENTS = 1024 };
    static struct epoll_event events[EVENTS];
    union {
        char buffer[CMSG_SPACE(sizeof(struct timespec))];
        struct cmsghdr align;
    } control;

    for (;;) {
        uint64_t now = now_ns();
        if (!sampled && now >= measure_from) {
            cpu_times(pid_count, pids, cpu_from);
            machine_ticks(ticks_from);
            sampled = 1;
        }
        if (now >= measure_to && !ended) {
            cpu_times(pid_count, pids, cpu_to);
            machine_ticks(ticks_to);
            ended = 1;
        }
        /* Paced: the messages sent in the window may still be on their way: wait for them
         * (at most 2 s), sending no more. */
        if (ended && (window_mode || outstanding == 0 || now >= measure_to + 2000000000ull)) break;
        if (window_mode && now - progress > 3000000000ull) { /* a message never completed */
            stalled = 1;
            break;
        }
        /* Publish: to the window, or on schedule. */
        while (!ended && (window_mode ? in_flight < (uint64_t)value : now >= next_due)) {
            uint32_t seq = (uint32_t)(published & (SEQS - 1));
            if (remaining[seq]) break; /* the ring wrapped onto a message still arriving */
            int n = snprintf(text, sizeof text, "p %u %llu ", seq, (unsigned long long)now_ns());
            memset(text + n, 'x', size - (size_t)n);
            send_all(publisher, frame, text_frame(frame, text, size));
            remaining[seq] = (uint32_t)subscribers;
            published++;
            in_flight++;
            measured_seq[seq] = now >= measure_from;
            if (now >= measure_from) {
                measured_published++;
                outstanding++;
            }
            next_due += interval;
            if (!window_mode && next_due < now - 1000000000ull) next_due = now; /* far behind */
        }
        int timeout = 1;
        if (!window_mode && next_due > now) timeout = (int)((next_due - now) / 1000000);
        int ready = epoll_wait(epoll, events, EVENTS, timeout);
        if (ready < 0 && errno != EINTR) die("epoll_wait");
        /* Something arrived: let the servers go on delivering for PAUSE_MS (paced: at most
         * until the next message is due) before reading it all, so that this process does not
         * take a CPU from them meanwhile (real clients are on other machines). At saturation
         * each read then brings several frames; paced, the latency is the kernel's receive
         * time, which the wait does not change. */
        if (ready > 0 && pause_ms > 0) {
            uint64_t wait = (uint64_t)(pause_ms * 1e6), at = now_ns();
            if (!window_mode && !ended) wait = next_due > at ? (next_due - at < wait ? next_due - at : wait) : 0;
            if (wait > 0) {
                struct timespec pause = {(time_t)(wait / 1000000000ull), (long)(wait % 1000000000ull)};
                nanosleep(&pause, NULL);
                ready = epoll_wait(epoll, events, EVENTS, 0);
                if (ready < 0 && errno != EINTR) die("epoll_wait");
            }
        }
        for (int e = 0; e < ready; e++) {
            conn_t *c = events[e].data.ptr;
            struct iovec io = {.iov_base = c->buffer + c->used, .iov_len = BUFFER - c->used};
            struct msghdr message = {.msg_iov = &io,
                                     .msg_iovlen = 1,
                                     .msg_control = control.buffer,
                                     .msg_controllen = sizeof control.buffer};
            ssize_t n = recvmsg(c->fd, &message, 0);
            if (n <= 0) {
                if (n < 0 && (errno == EAGAIN || errno == EINTR)) continue;
                fprintf(stderr, "pubsub_load: a subscriber's connection closed\n");
                return 2;
            }
            if (sampled && !ended) reads_done++; /* in the window */
            c->used += (size_t)n;
            uint64_t received = now_ns();
            /* When the last of these bytes reached the socket (the kernel's timestamp): the
             * delivery, whenever this process got the CPU to read it. */
            uint64_t arrived = received;
            for (struct cmsghdr *cm = CMSG_FIRSTHDR(&message); cm; cm = CMSG_NXTHDR(&message, cm)) {
                if (cm->cmsg_level == SOL_SOCKET && cm->cmsg_type == SCM_TIMESTAMPNS) {
                    struct timespec ts;
                    memcpy(&ts, CMSG_DATA(cm), sizeof ts);
                    uint64_t at_ns = (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
                    if (at_ns && at_ns <= received) {
                        arrived = at_ns;
                        if (sampled && !ended) stamped++;
                    }
                }
            }
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
                    if (sscanf(copy, "p %u %llu", &seq, &sent) == 2 && seq < SEQS && sent >= start) {
                        if (window_mode && received >= measure_from && !ended) {
                            deliveries++; /* saturation: all that arrive in the window */
                        } else if (received >= measure_from && sent >= measure_from) {
                            deliveries++;
                            if (recorded < capacity) {
                                uint64_t from = arrived > sent ? arrived : sent;
                                latencies[recorded] = (uint32_t)((from - sent) / 1000);
                                reads[recorded++] = (uint32_t)((received - sent) / 1000);
                            }
                        } else if (received >= measure_from) {
                            late++;
                        }
                        if (remaining[seq] && --remaining[seq] == 0) {
                            completed++;
                            if (measured_seq[seq]) outstanding--;
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
    if (!sampled) {
        memcpy(cpu_from, cpu_to, sizeof cpu_from);
        memcpy(ticks_from, ticks_to, sizeof ticks_from);
    }
    double ticks = (double)(ticks_to[0] - ticks_from[0]), per_second = (double)sysconf(_SC_CLK_TCK);
    double seconds = duration;
    qsort(latencies, recorded, sizeof *latencies, compare);
    uint32_t p50 = recorded ? latencies[recorded / 2] : 0;
    uint32_t p99 = recorded ? latencies[(size_t)((double)recorded * 0.99)] : 0;
    uint32_t max = recorded ? latencies[recorded - 1] : 0;
    qsort(reads, recorded, sizeof *reads, compare);
    uint32_t read_p50 = recorded ? reads[recorded / 2] : 0;
    uint32_t read_p99 = recorded ? reads[(size_t)((double)recorded * 0.99)] : 0;
    printf("{\"deliveries\": %llu, \"seconds\": %.3f, \"deliveries_per_s\": %.0f, "
           "\"published\": %llu, \"completed\": %llu, \"p50_us\": %u, \"p99_us\": %u, "
           "\"max_us\": %u, \"expected\": %llu, \"stalled\": %s",
           (unsigned long long)deliveries, seconds, (double)deliveries / seconds,
           (unsigned long long)measured_published, (unsigned long long)completed, p50, p99, max,
           (unsigned long long)(measured_published * (uint64_t)subscribers),
           stalled ? "true" : "false");
    printf(", \"read_p50_us\": %u, \"read_p99_us\": %u, \"reads\": %llu, \"stamped\": %llu",
           read_p50, read_p99, (unsigned long long)reads_done, (unsigned long long)stamped);
    /* The machine's CPUs in the window: busy (any process, ours included) and stolen, in
     * CPU-seconds. */
    printf(", \"machine_busy_cpu_s\": %.3f, \"machine_steal_cpu_s\": %.3f",
           (ticks - (double)(ticks_to[1] - ticks_from[1]) - (double)(ticks_to[2] - ticks_from[2])) / per_second,
           (double)(ticks_to[2] - ticks_from[2]) / per_second);
    printf(", \"publisher_pid\": %ld, \"loadgen_cpu_s\": %.4f, \"cpu_s\": {", publisher_pid,
           cpu_to[pid_count] - cpu_from[pid_count]);
    for (int i = 0; i < pid_count; i++)
        printf("%s\"%d\": %.4f", i ? ", " : "", (int)pids[i], cpu_to[i] - cpu_from[i]);
    printf("}, \"subscribers_by_pid\": {");
    for (int i = 0; i < pid_count; i++)
        printf("%s\"%d\": %ld", i ? ", " : "", (int)pids[i], split[i]);
    printf("}}\n");
    (void)late;
    return 0;
}
