/* vsocktest: the guest end of the vsock end-to-end test (busybox has no vsock client).
 *   vsocktest sink PORT          listen on PORT; for each connection (in its own child):
 *                                read to EOF, answer "n=BYTES crc=CRC32\n", close
 *   vsocktest source PORT BYTES  connect to the host (CID 2) on PORT, send BYTES of a
 *                                fixed pattern, shut down writing, read the host's
 *                                answer; print "sent n=BYTES crc=CRC32 got ANSWER"
 *   vsocktest hog PORT BYTES     like source, but nobody reads: print how far it got
 *                                every 16 MiB, then the total (or the error)
 *   vsocktest wait PORT          accept one connection, read it to EOF, exit 0
 *   vsocktest echo PORT          listen on PORT; each connection (own child) gets back what
 *                                it sends, until EOF (for round-trip benchmarks)
 *   vsocktest steal FIRST LAST SECONDS
 *                                the attacker of tests/e2e/security.sh: for SECONDS, connect
 *                                to the host on every port FIRST..LAST in turn; on each
 *                                connection send a forged preamble and "FAKE-OUTPUT", read
 *                                what arrives for up to 2 s; print per connection "port P:
 *                                read N bytes: DATA", then "steal: C connections, B bytes"
 * The CRC is zlib's crc32, so the host side can check it with Python's zlib.
 * Exit 0 on success; otherwise one line on stderr naming the failed call. */
#define _GNU_SOURCE
#include <errno.h>
#include <linux/vm_sockets.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

static uint32_t table[256];

static void crc_init(void) {
  for (uint32_t i = 0; i < 256; i++) {
    uint32_t c = i;
    for (int k = 0; k < 8; k++) c = c & 1 ? 0xedb88320u ^ (c >> 1) : c >> 1;
    table[i] = c;
  }
}

static uint32_t crc_update(uint32_t crc, const unsigned char *p, size_t n) {
  crc = ~crc;
  while (n--) crc = table[(crc ^ *p++) & 0xff] ^ (crc >> 8);
  return ~crc;
}

static int die(const char *what) {
  fprintf(stderr, "vsocktest: %s: %s\n", what, strerror(errno));
  exit(1);
}

static int vsock(void) {
  int s = socket(AF_VSOCK, SOCK_STREAM, 0);
  if (s < 0) die("socket(AF_VSOCK)");
  return s;
}

static int listen_on(unsigned port) {
  struct sockaddr_vm a = {.svm_family = AF_VSOCK, .svm_cid = VMADDR_CID_ANY, .svm_port = port};
  int s = vsock();
  if (bind(s, (struct sockaddr *)&a, sizeof a) != 0) die("bind");
  if (listen(s, 128) != 0) die("listen");
  return s;
}

static int connect_host(unsigned port) {
  struct sockaddr_vm a = {.svm_family = AF_VSOCK, .svm_cid = VMADDR_CID_HOST, .svm_port = port};
  int s = vsock();
  if (connect(s, (struct sockaddr *)&a, sizeof a) != 0) die("connect");
  return s;
}

/* The steal mode: see the top of the file. */
static int steal(unsigned first, unsigned last, int seconds) {
  time_t end = time(NULL) + seconds;
  unsigned long conns = 0, bytes = 0;
  while (time(NULL) < end) {
    for (unsigned p = first; p <= last; p++) {
      struct sockaddr_vm a = {.svm_family = AF_VSOCK, .svm_cid = VMADDR_CID_HOST, .svm_port = p};
      int s = vsock();
      if (connect(s, (struct sockaddr *)&a, sizeof a) != 0) {
        close(s);
        continue;
      }
      conns++;
      char forged[32 + 12];
      memset(forged, 'A', 32);
      memcpy(forged + 32, "FAKE-OUTPUT\n", 12);
      (void)!write(s, forged, sizeof forged);
      struct timeval tv = {.tv_sec = 2};
      setsockopt(s, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
      char buf[4096];
      ssize_t r, n = 0;
      while (n < (ssize_t)sizeof buf - 1 && (r = read(s, buf + n, sizeof buf - 1 - n)) > 0) n += r;
      buf[n] = 0;
      bytes += n;
      printf("port %u: read %zd bytes: %s\n", p, n, buf);
      fflush(stdout);
      close(s);
    }
    usleep(2000);
  }
  printf("steal: %lu connections, %lu bytes\n", conns, bytes);
  return 0;
}

static void echo(int c) {
  static unsigned char buf[65536];
  ssize_t r;
  while ((r = read(c, buf, sizeof buf)) > 0) {
    for (ssize_t done = 0; done < r;) {
      ssize_t w = write(c, buf + done, r - done);
      if (w < 0) die("write");
      done += w;
    }
  }
  close(c);
}

static void serve(int c) {
  static unsigned char buf[65536];
  unsigned long long n = 0;
  uint32_t crc = 0;
  ssize_t r;
  while ((r = read(c, buf, sizeof buf)) > 0) {
    crc = crc_update(crc, buf, r);
    n += r;
  }
  if (r < 0) die("read");
  dprintf(c, "n=%llu crc=%08x\n", n, crc);
  close(c);
}

/* Fills buf with the pattern for offset `off` (a byte counter, so any cut works). */
static void pattern(unsigned char *buf, size_t len, unsigned long long off) {
  for (size_t i = 0; i < len; i++) buf[i] = (unsigned char)((off + i) * 131 + ((off + i) >> 12));
}

static int send_all(int s, unsigned long long bytes, int report) {
  static unsigned char buf[65536];
  unsigned long long off = 0, next_report = 16ull << 20;
  uint32_t crc = 0;
  while (off < bytes) {
    size_t len = bytes - off < sizeof buf ? bytes - off : sizeof buf;
    pattern(buf, len, off);
    size_t done = 0;
    while (done < len) {
      ssize_t w = write(s, buf + done, len - done);
      if (w < 0) {
        if (report) {
          printf("VSOCK-HOG stopped n=%llu: %s\n", off + done, strerror(errno));
          return 1;
        }
        die("write");
      }
      done += w;
    }
    crc = crc_update(crc, buf, len);
    off += len;
    if (report && off >= next_report) {
      printf("VSOCK-HOG n=%llu\n", off);
      fflush(stdout);
      next_report += 16ull << 20;
    }
  }
  if (report) {
    printf("VSOCK-HOG done n=%llu\n", off);
    return 0;
  }
  printf("sent n=%llu crc=%08x", off, crc);
  return 0;
}

int main(int argc, char **argv) {
  crc_init();
  if (argc == 3 && (strcmp(argv[1], "sink") == 0 || strcmp(argv[1], "echo") == 0)) {
    int echoing = argv[1][0] == 'e';
    signal(SIGCHLD, SIG_IGN);
    int s = listen_on(atoi(argv[2]));
    for (;;) {
      int c = accept(s, NULL, NULL);
      if (c < 0) {
        if (errno == EINTR) continue;
        die("accept");
      }
      pid_t pid = fork();
      if (pid == 0) {
        close(s);
        if (echoing)
          echo(c);
        else
          serve(c);
        _exit(0);
      }
      if (pid < 0) die("fork");
      close(c);
    }
  }
  if (argc == 4 && (strcmp(argv[1], "source") == 0 || strcmp(argv[1], "hog") == 0)) {
    int hog = argv[1][0] == 'h';
    int s = connect_host(atoi(argv[2]));
    int rc = send_all(s, strtoull(argv[3], NULL, 10), hog);
    if (hog) return rc;
    if (shutdown(s, SHUT_WR) != 0) die("shutdown");
    char answer[128] = {0};
    size_t got = 0;
    ssize_t r;
    while (got < sizeof answer - 1 && (r = read(s, answer + got, sizeof answer - 1 - got)) > 0)
      got += r;
    printf(" got %s", answer);
    if (got == 0 || answer[got - 1] != '\n') printf("\n");
    return 0;
  }
  if (argc == 3 && strcmp(argv[1], "wait") == 0) {
    int s = listen_on(atoi(argv[2]));
    int c = accept(s, NULL, NULL);
    if (c < 0) die("accept");
    char b[256];
    while (read(c, b, sizeof b) > 0) {
    }
    return 0;
  }
  if (argc == 5 && strcmp(argv[1], "steal") == 0)
    return steal(atoi(argv[2]), atoi(argv[3]), atoi(argv[4]));
  fprintf(stderr,
          "usage: vsocktest sink PORT | source PORT BYTES | hog PORT BYTES | wait PORT | echo PORT"
          " | steal FIRST LAST SECONDS\n");
  return 2;
}
