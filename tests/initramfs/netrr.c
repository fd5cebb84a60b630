/* netrr: 1-byte TCP request/response round trips, for the network benchmark
 * (tests/bench/net.sh).
 *   netrr server ADDR PORT        listen on ADDR:PORT; each connection (in its own child)
 *                                 gets back every byte it sends, until EOF
 *   netrr client ADDR PORT N      connect (retrying for up to 10 s), TCP_NODELAY, 100
 *                                 warm-up round trips, then N timed ones of 1 byte each;
 *                                 print "rtt_median_us=M rtt_mean_us=A rtt_min_us=L n=N"
 * Every receive has a 10 s limit and the client a 120 s alarm, so a lost peer ends it.
 * Exit 0 on success; otherwise one line on stderr naming the failed call. */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

static void die(const char *what) {
  fprintf(stderr, "netrr: %s: %s\n", what, strerror(errno));
  exit(1);
}

static struct sockaddr_in addr_of(const char *ip, const char *port) {
  struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((unsigned short)atoi(port))};
  if (inet_pton(AF_INET, ip, &a.sin_addr) != 1) {
    fprintf(stderr, "netrr: bad IPv4 address %s\n", ip);
    exit(2);
  }
  return a;
}

static void tune(int s) {
  int one = 1;
  struct timeval tv = {.tv_sec = 10};
  if (setsockopt(s, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one) != 0) die("TCP_NODELAY");
  if (setsockopt(s, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv) != 0) die("SO_RCVTIMEO");
}

static int serve(const char *ip, const char *port) {
  struct sockaddr_in a = addr_of(ip, port);
  int one = 1, s = socket(AF_INET, SOCK_STREAM, 0);
  if (s < 0) die("socket");
  setsockopt(s, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
  if (bind(s, (struct sockaddr *)&a, sizeof a) != 0) die("bind");
  if (listen(s, 16) != 0) die("listen");
  signal(SIGCHLD, SIG_IGN);
  for (;;) {
    int c = accept(s, NULL, NULL);
    if (c < 0) {
      if (errno == EINTR) continue;
      die("accept");
    }
    pid_t p = fork();
    if (p == 0) {
      char buf[64];
      ssize_t n;
      close(s);
      tune(c);
      while ((n = read(c, buf, sizeof buf)) > 0)
        if (write(c, buf, (size_t)n) != n) break;
      _exit(0);
    }
    close(c);
  }
}

static double now_us(void) {
  struct timespec t;
  clock_gettime(CLOCK_MONOTONIC, &t);
  return (double)t.tv_sec * 1e6 + (double)t.tv_nsec / 1e3;
}

static int cmp(const void *a, const void *b) {
  double x = *(const double *)a, y = *(const double *)b;
  return (x > y) - (x < y);
}

static int client(const char *ip, const char *port, long n) {
  struct sockaddr_in a = addr_of(ip, port);
  int s = -1;
  alarm(120);
  for (int i = 0; i < 100; i++) {
    s = socket(AF_INET, SOCK_STREAM, 0);
    if (s < 0) die("socket");
    if (connect(s, (struct sockaddr *)&a, sizeof a) == 0) break;
    close(s);
    s = -1;
    usleep(100000);
  }
  if (s < 0) die("connect");
  tune(s);
  double *t = malloc(sizeof(double) * (size_t)n), sum = 0;
  if (!t) die("malloc");
  for (long i = -100; i < n; i++) {
    char c = 'x';
    double t0 = now_us();
    if (write(s, &c, 1) != 1) die("write");
    if (read(s, &c, 1) != 1) die("read");
    if (i >= 0) t[i] = now_us() - t0;
  }
  close(s);
  for (long i = 0; i < n; i++) sum += t[i];
  qsort(t, (size_t)n, sizeof(double), cmp);
  printf("rtt_median_us=%.1f rtt_mean_us=%.1f rtt_min_us=%.1f n=%ld\n",
         n % 2 ? t[n / 2] : (t[n / 2 - 1] + t[n / 2]) / 2, sum / (double)n, t[0], n);
  return 0;
}

int main(int argc, char **argv) {
  if (argc == 4 && strcmp(argv[1], "server") == 0) return serve(argv[2], argv[3]);
  if (argc == 5 && strcmp(argv[1], "client") == 0 && atol(argv[4]) > 0)
    return client(argv[2], argv[3], atol(argv[4]));
  fprintf(stderr, "usage: netrr server ADDR PORT | netrr client ADDR PORT N\n");
  return 2;
}
