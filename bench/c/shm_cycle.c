/*
 * The syscalls under MappedMemory.create + close + unlink, and under MappedMemory.open +
 * close, with nothing else: the floor those calls are compared with.
 *
 *   create: shm_open(O_CREAT|O_EXCL|O_RDWR) + ftruncate + mmap + close + munmap + shm_unlink
 *   attach: shm_open(O_RDWR) + fstat + mmap + close + munmap  (of an object made beforehand)
 *
 *   shm_cycle create|attach NAME SIZE ITERS
 *   -> {"ns_per_op":N}   (the median of ITERS individually timed operations)
 */
#define _GNU_SOURCE
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

static long now_ns(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return ts.tv_sec * 1000000000L + ts.tv_nsec;
}

static void die(const char *what) {
  perror(what);
  exit(1);
}

static void create_cycle(const char *name, size_t size) {
  int fd = shm_open(name, O_CREAT | O_EXCL | O_RDWR, 0600);
  if (fd < 0) die("shm_open");
  if (ftruncate(fd, (off_t)size) != 0) die("ftruncate");
  void *p = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
  if (p == MAP_FAILED) die("mmap");
  close(fd);
  munmap(p, size);
  if (shm_unlink(name) != 0) die("shm_unlink");
}

static void attach_cycle(const char *name) {
  int fd = shm_open(name, O_RDWR, 0);
  if (fd < 0) die("shm_open");
  struct stat st;
  if (fstat(fd, &st) != 0) die("fstat");
  void *p = mmap(NULL, (size_t)st.st_size, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
  if (p == MAP_FAILED) die("mmap");
  close(fd);
  munmap(p, (size_t)st.st_size);
}

static int cmp_long(const void *a, const void *b) {
  long x = *(const long *)a, y = *(const long *)b;
  return (x > y) - (x < y);
}

int main(int argc, char **argv) {
  if (argc != 5) {
    fprintf(stderr, "usage: %s create|attach NAME SIZE ITERS\n", argv[0]);
    return 2;
  }
  int attach = strcmp(argv[1], "attach") == 0;
  const char *name = argv[2];
  size_t size = strtoul(argv[3], NULL, 10);
  long iters = atol(argv[4]);
  if ((!attach && strcmp(argv[1], "create") != 0) || size == 0 || iters < 1) {
    fprintf(stderr, "bad arguments\n");
    return 2;
  }
  if (attach) {
    int fd = shm_open(name, O_CREAT | O_EXCL | O_RDWR, 0600);
    if (fd < 0) die("shm_open");
    if (ftruncate(fd, (off_t)size) != 0) die("ftruncate");
    close(fd);
  }
  long *t = malloc(sizeof(long) * (size_t)iters);
  if (!t) die("malloc");
  for (long i = 0; i < iters; i++) {
    long t0 = now_ns();
    if (attach) attach_cycle(name);
    else create_cycle(name, size);
    t[i] = now_ns() - t0;
  }
  if (attach) shm_unlink(name);
  qsort(t, (size_t)iters, sizeof(long), cmp_long);
  printf("{\"ns_per_op\":%ld}\n", t[iters / 2]);
  return 0;
}
