/*
 * A C program that attaches to a shmutils segment and counts in it, alongside JavaScript.
 * Usage: counter NAME OFFSET N
 *   NAME    the segment ("/my-app")
 *   OFFSET  where the uint64_t counter is (ref.offset in JavaScript)
 *   N       how many times to add 1 (atomically: the same locked add as Atomics.add)
 * Checks the segment header first (docs/FORMAT.md, section 2): everything read from a
 * shared segment is untrusted. Built and run by examples/c-interop.mjs.
 */
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

/* The segment header, docs/FORMAT.md section 2 (little-endian, 256 bytes). */
struct segment_header {
  uint64_t magic; /* "SHMUTILS" */
  uint32_t version, header_size;
  uint64_t size, base;
  uint32_t flags, reserved;
  uint64_t heap_offset, heap_size;
};

static int fail(const char *what) {
  fprintf(stderr, "counter: %s\n", what);
  return 1;
}

int main(int argc, char **argv) {
  if (argc != 4) return fail("usage: counter NAME OFFSET N");
  const char *name = argv[1];
  uint64_t offset = strtoull(argv[2], NULL, 10);
  long n = strtol(argv[3], NULL, 10);

  int fd = shm_open(name, O_RDWR, 0);
  if (fd < 0) return fail("shm_open failed (no such segment?)");
  struct stat st;
  if (fstat(fd, &st) != 0 || st.st_size < 4096) return fail("not a segment");
  uint8_t *seg = mmap(NULL, (size_t)st.st_size, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
  close(fd);
  if (seg == MAP_FAILED) return fail("mmap failed");

  struct segment_header h;
  uint64_t magic = __atomic_load_n((uint64_t *)seg, __ATOMIC_ACQUIRE);
  memcpy(&h, seg, sizeof h);
  if (memcmp(&magic, "SHMUTILS", 8) != 0 || h.version != 1 || h.header_size != 256 ||
      h.size != (uint64_t)st.st_size)
    return fail("not a shmutils segment");
  if (offset % 8 != 0 || offset < h.heap_offset || offset + 8 > h.heap_offset + h.heap_size)
    return fail("offset outside the heap");

  uint64_t *counter = (uint64_t *)(seg + offset);
  for (long i = 0; i < n; i++) __atomic_fetch_add(counter, 1, __ATOMIC_SEQ_CST);
  printf("C process %d: added %ld, counter now %llu\n", (int)getpid(), n,
         (unsigned long long)__atomic_load_n(counter, __ATOMIC_SEQ_CST));
  munmap(seg, (size_t)st.st_size);
  return 0;
}
