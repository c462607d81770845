/* vsockt: a tiny AF_VSOCK line exchanger for guest tests (busybox has no socat).
 *   vsockt cid                   print this guest's CID (/dev/vsock)
 *   vsockt connect CID PORT MSG  connect, send MSG and a newline, print the line received
 *   vsockt listen PORT MSG       listen on PORT (prints "listening"), accept one connection,
 *                                print the line received, answer MSG and a newline
 * Built static by tests/boot_nested.rs. */
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <unistd.h>
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
    fprintf(stderr, "usage: vsockt cid | connect CID PORT MSG | listen PORT MSG\n");
    return 2;
}
