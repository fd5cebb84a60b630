/* fstest: the few file operations busybox lacks, for the virtio-fs end-to-end test.
 *   fstest xattr FILE    set trusted.runv=yes on FILE, read it back, list it
 *   fstest mmap FILE     create FILE (4 KiB), write "mmap-ok" through a MAP_SHARED mapping
 *   fstest direct FILE   open FILE with O_DIRECT and read it
 * Exit 0 on success; otherwise one line on stderr naming the failed call. */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/xattr.h>
#include <unistd.h>

static int fail(const char *what, const char *path) {
  fprintf(stderr, "fstest: %s %s: %s\n", what, path, strerror(errno));
  return 1;
}

static int do_xattr(const char *path) {
  char value[16] = {0}, names[256] = {0};
  if (setxattr(path, "trusted.runv", "yes", 3, 0) != 0) return fail("setxattr", path);
  if (getxattr(path, "trusted.runv", value, sizeof value) != 3 || strcmp(value, "yes") != 0)
    return fail("getxattr", path);
  ssize_t n = listxattr(path, names, sizeof names);
  if (n <= 0) return fail("listxattr", path);
  for (char *p = names; p < names + n; p += strlen(p) + 1)
    if (strcmp(p, "trusted.runv") == 0) return 0;
  errno = ENODATA;
  return fail("listxattr (trusted.runv missing)", path);
}

static int do_mmap(const char *path) {
  int fd = open(path, O_RDWR | O_CREAT | O_TRUNC, 0644);
  if (fd < 0) return fail("open", path);
  if (ftruncate(fd, 4096) != 0) return fail("ftruncate", path);
  char *p = mmap(NULL, 4096, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
  if (p == MAP_FAILED) return fail("mmap MAP_SHARED", path);
  memcpy(p, "mmap-ok", 7);
  if (msync(p, 4096, MS_SYNC) != 0) return fail("msync", path);
  if (munmap(p, 4096) != 0) return fail("munmap", path);
  if (close(fd) != 0) return fail("close", path);
  return 0;
}

static int do_direct(const char *path) {
  int fd = open(path, O_RDONLY | O_DIRECT);
  if (fd < 0) return fail("open O_DIRECT", path);
  void *buf;
  if (posix_memalign(&buf, 4096, 4096) != 0) return fail("posix_memalign", path);
  if (read(fd, buf, 4096) < 0) return fail("read O_DIRECT", path);
  close(fd);
  return 0;
}

int main(int argc, char **argv) {
  if (argc != 3) {
    fprintf(stderr, "usage: fstest xattr|mmap|direct FILE\n");
    return 2;
  }
  if (strcmp(argv[1], "xattr") == 0) return do_xattr(argv[2]);
  if (strcmp(argv[1], "mmap") == 0) return do_mmap(argv[2]);
  if (strcmp(argv[1], "direct") == 0) return do_direct(argv[2]);
  fprintf(stderr, "fstest: unknown operation %s\n", argv[1]);
  return 2;
}
