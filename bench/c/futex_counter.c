/*
 * The C reference for shmutils' Lock under contention: PROCS forked processes increment
 * one counter in a MAP_SHARED anonymous mapping under the three-state futex mutex
 * (0 free, 1 locked, 2 locked with waiters; Drepper, "Futexes Are Tricky"), without
 * FUTEX_PRIVATE_FLAG, until it reaches LIMIT. Layout as in the JS row: the lock word at
 * byte 0, the counter at byte 64. The children start together from a spin barrier and
 * time themselves with CLOCK_MONOTONIC; the span is max(end) - min(start).
 *
 *   futex_counter PROCS LIMIT
 *   -> {"span_ns":N,"counter":N,"counts":[N,...]}
 */
#define _GNU_SOURCE
#include <linux/futex.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define MAX_PROCS 64

struct shared {
  _Atomic int lock;
  char pad0[60];
  long counter;
  char pad1[56];
  _Atomic int ready;
  _Atomic int go;
  long start[MAX_PROCS];
  long end[MAX_PROCS];
  long counts[MAX_PROCS];
};

static long now_ns(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return ts.tv_sec * 1000000000L + ts.tv_nsec;
}

static void futex(_Atomic int *word, int op, int val) {
  syscall(SYS_futex, word, op, val, NULL, NULL, 0);
}

static void lock(_Atomic int *m) {
  int c = 0;
  if (atomic_compare_exchange_strong(m, &c, 1)) return;
  if (c != 2) c = atomic_exchange(m, 2);
  while (c != 0) {
    futex(m, FUTEX_WAIT, 2);
    c = atomic_exchange(m, 2);
  }
}

static void unlock(_Atomic int *m) {
  if (atomic_exchange(m, 0) == 2) futex(m, FUTEX_WAKE, 1);
}

static void child(struct shared *s, int i, int procs, long limit) {
  atomic_fetch_add(&s->ready, 1);
  while (atomic_load(&s->ready) < procs || !atomic_load(&s->go)) {
  }
  s->start[i] = now_ns();
  long mine = 0;
  for (;;) {
    lock(&s->lock);
    if (s->counter >= limit) {
      unlock(&s->lock);
      break;
    }
    s->counter++;
    unlock(&s->lock);
    mine++;
  }
  s->end[i] = now_ns();
  s->counts[i] = mine;
  _exit(0);
}

int main(int argc, char **argv) {
  if (argc != 3) {
    fprintf(stderr, "usage: %s PROCS LIMIT\n", argv[0]);
    return 2;
  }
  int procs = atoi(argv[1]);
  long limit = atol(argv[2]);
  if (procs < 1 || procs > MAX_PROCS || limit < 0) {
    fprintf(stderr, "bad arguments\n");
    return 2;
  }
  struct shared *s = mmap(NULL, sizeof *s, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
  if (s == MAP_FAILED) {
    perror("mmap");
    return 1;
  }
  pid_t pids[MAX_PROCS];
  for (int i = 0; i < procs; i++) {
    pids[i] = fork();
    if (pids[i] < 0) {
      perror("fork");
      return 1;
    }
    if (pids[i] == 0) child(s, i, procs, limit);
  }
  while (atomic_load(&s->ready) < procs) usleep(100);
  atomic_store(&s->go, 1);
  int failed = 0;
  for (int i = 0; i < procs; i++) {
    int status;
    if (waitpid(pids[i], &status, 0) < 0 || !WIFEXITED(status) || WEXITSTATUS(status) != 0) failed = 1;
  }
  if (failed) {
    fprintf(stderr, "a child failed\n");
    return 1;
  }
  long first = s->start[0], last = s->end[0];
  for (int i = 1; i < procs; i++) {
    if (s->start[i] < first) first = s->start[i];
    if (s->end[i] > last) last = s->end[i];
  }
  printf("{\"span_ns\":%ld,\"counter\":%ld,\"counts\":[", last - first, s->counter);
  for (int i = 0; i < procs; i++) printf("%s%ld", i ? "," : "", s->counts[i]);
  printf("]}\n");
  return 0;
}
