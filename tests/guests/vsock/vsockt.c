/* vsockt: a tiny AF_VSOCK line exchanger for guest tests (busybox has no socat).
 *   vsockt cid                   print this guest's CID (/dev/vsock)
 *   vsockt connect CID PORT MSG  connect, send MSG and a newline, print the line received
 *   vsockt listen PORT MSG       listen on PORT (prints "listening"), accept one connection,
 *                                print the line received, answer MSG and a newline
 *   vsockt rr TARGET ROUNDS      ROUNDS one-byte round trips with an echo server; prints the
 *                                median and 99th percentile in microseconds
 *   vsockt stream TARGET MIB     send MIB MiB and wait for the server's one-byte answer after
 *                                the last byte; prints MiB/s
 * TARGET is vsock:CID:PORT or tcp:IPV4:PORT (the same measure over the NIC, for reference).
 * Built static by tests/boot_nested.rs and bench/vsock.sh. */
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>
#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <linux/vm_sockets.h>

static int read_line(int fd, char *buf, size_t cap)
{
    size_t n = 0;
    while (n + 1 < cap) {
        char c;
        ssize_t r = read(fd, &c, 1);
        if (r <= 0)
            return -1;
        if (c == '\n')
            break;
        buf[n++] = c;
    }
    buf[n] = 0;
    return 0;
}

static int send_line(int fd, const char *msg)
{
    size_t len = strlen(msg);
    return write(fd, msg, len) == (ssize_t)len && write(fd, "\n", 1) == 1 ? 0 : -1;
}

static int die(const char *what)
{
    perror(what);
    return 1;
}

/* A connected stream socket to TARGET (vsock:CID:PORT or tcp:IPV4:PORT), or -1. */
static int connect_target(const char *target)
{
    char host[64];
    unsigned int port;
    if (sscanf(target, "vsock:%63[0-9]:%u", host, &port) == 2) {
        struct sockaddr_vm a;
        int s = socket(AF_VSOCK, SOCK_STREAM, 0);
        memset(&a, 0, sizeof(a));
        a.svm_family = AF_VSOCK;
        a.svm_cid = (unsigned int)strtoul(host, NULL, 10);
        a.svm_port = port;
        return s >= 0 && connect(s, (struct sockaddr *)&a, sizeof(a)) == 0 ? s : -1;
    }
    if (sscanf(target, "tcp:%63[0-9.]:%u", host, &port) == 2) {
        struct sockaddr_in a;
        int one = 1, s = socket(AF_INET, SOCK_STREAM, 0);
        memset(&a, 0, sizeof(a));
        a.sin_family = AF_INET;
        a.sin_port = htons((unsigned short)port);
        if (s < 0 || inet_pton(AF_INET, host, &a.sin_addr) != 1)
            return -1;
        setsockopt(s, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
        return connect(s, (struct sockaddr *)&a, sizeof(a)) == 0 ? s : -1;
    }
    return -1;
}

static double now_us(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec * 1e6 + t.tv_nsec / 1e3;
}

static int by_value(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

static int round_trips(const char *target, long rounds)
{
    int s = connect_target(target);
    double *us = calloc((size_t)rounds, sizeof(double));
    char c = 'x';
    if (s < 0 || !us || rounds < 1)
        return die("rr connect");
    for (long i = 0; i < rounds; i++) {
        double t = now_us();
        if (write(s, &c, 1) != 1 || read(s, &c, 1) != 1)
            return die("rr exchange");
        us[i] = now_us() - t;
    }
    qsort(us, (size_t)rounds, sizeof(double), by_value);
    printf("p50_us=%.1f p99_us=%.1f rounds=%ld\n", us[rounds / 2], us[rounds * 99 / 100], rounds);
    close(s);
    return 0;
}

static int stream(const char *target, long mib)
{
    static char buf[64 * 1024];
    int s = connect_target(target);
    long left = mib << 20;
    char ack;
    double t;
    if (s < 0 || mib < 1)
        return die("stream connect");
    memset(buf, 0x5a, sizeof(buf));
    t = now_us();
    while (left > 0) {
        ssize_t n = write(s, buf, left < (long)sizeof(buf) ? (size_t)left : sizeof(buf));
        if (n <= 0)
            return die("stream write");
        left -= n;
    }
    shutdown(s, SHUT_WR);
    if (read(s, &ack, 1) != 1)
        return die("stream ack");
    printf("mib_s=%.1f mib=%ld\n", mib * 1e6 / (now_us() - t), mib);
    close(s);
    return 0;
}

int main(int argc, char **argv)
{
    char line[256];
    struct sockaddr_vm addr;
    memset(&addr, 0, sizeof(addr));
    addr.svm_family = AF_VSOCK;
    if (argc == 2 && !strcmp(argv[1], "cid")) {
        unsigned int cid;
        int fd = open("/dev/vsock", O_RDONLY);
        if (fd < 0 || ioctl(fd, IOCTL_VM_SOCKETS_GET_LOCAL_CID, &cid) < 0)
            return die("IOCTL_VM_SOCKETS_GET_LOCAL_CID");
        printf("%u\n", cid);
        return 0;
    }
    if (argc == 5 && !strcmp(argv[1], "connect")) {
        int s = socket(AF_VSOCK, SOCK_STREAM, 0);
        addr.svm_cid = (unsigned int)strtoul(argv[2], NULL, 10);
        addr.svm_port = (unsigned int)strtoul(argv[3], NULL, 10);
        if (s < 0 || connect(s, (struct sockaddr *)&addr, sizeof(addr)) < 0)
            return die("connect");
        if (send_line(s, argv[4]) < 0 || read_line(s, line, sizeof(line)) < 0)
            return die("exchange");
        printf("%s\n", line);
        close(s);
        return 0;
    }
    if (argc == 4 && !strcmp(argv[1], "listen")) {
        int s = socket(AF_VSOCK, SOCK_STREAM, 0), c;
        addr.svm_cid = VMADDR_CID_ANY;
        addr.svm_port = (unsigned int)strtoul(argv[2], NULL, 10);
        if (s < 0 || bind(s, (struct sockaddr *)&addr, sizeof(addr)) < 0 || listen(s, 1) < 0)
            return die("listen");
        printf("listening\n");
        fflush(stdout);
        c = accept(s, NULL, NULL);
        if (c < 0)
            return die("accept");
        if (read_line(c, line, sizeof(line)) < 0)
            return die("read");
        printf("%s\n", line);
        fflush(stdout);
        if (send_line(c, argv[3]) < 0)
            return die("write");
        close(c);
        return 0;
    }
    if (argc == 4 && !strcmp(argv[1], "rr"))
        return round_trips(argv[2], strtol(argv[3], NULL, 10));
    if (argc == 4 && !strcmp(argv[1], "stream"))
        return stream(argv[2], strtol(argv[3], NULL, 10));
    fprintf(stderr, "usage: vsockt cid | connect CID PORT MSG | listen PORT MSG | "
                    "rr TARGET ROUNDS | stream TARGET MIB\n");
    return 2;
}
