/* threads.c — a small pthread pool (no OpenMP, so macOS builds too). Workers spin briefly between ops, then sleep,
 * because a decode step issues hundreds of short parallel ops and waking a sleeping thread costs more than the op. */
#define _GNU_SOURCE
#include <pthread.h>
#include <sched.h>
#include <stdlib.h>
#include <time.h>
#include <unistd.h>
#ifdef __GLIBC__
#include <malloc.h>
#endif
#include "internal.h"
#ifdef DBC_OPENBLAS
void openblas_set_num_threads(int);
#endif

/* Workers spin this long after a job before sleeping: a decode step's ops are a few µs to a few hundred µs apart, and
 * a futex wake-up on a VM costs tens of µs per op. DBCLUSTER_SPIN_US overrides it (lower it when several nodes share
 * a machine, where a spinning worker takes time from the others). */
#define DEFAULT_SPIN_NS 500000LL
static int64_t spin_ns = DEFAULT_SPIN_NS;

static struct {
  int threads;
  pthread_t* tids;
  uint64_t generation;
  dbc_range_fn fn;
  void* ctx;
  int64_t n, chunk, next;
  int active;
  int sleepers;
  pthread_mutex_t mu;
  pthread_cond_t cv;
  pthread_mutex_t submit; /* one parallel_for at a time; others run inline */
} pool = {.threads = 0, .mu = PTHREAD_MUTEX_INITIALIZER, .cv = PTHREAD_COND_INITIALIZER,
          .submit = PTHREAD_MUTEX_INITIALIZER};

static inline void cpu_relax(void) {
#if defined(__x86_64__)
  __builtin_ia32_pause();
#elif defined(__aarch64__)
  __asm__ __volatile__("yield");
#endif
}

/* Denormal floats (far below any value a model needs: attention weights e^-90 of a distant key, products of tiny
 * activations) can cost a microcode assist per vector instruction (attention over widely spread scores ran up to ~1.25×
 * slower here without this). Compute runs with flush-to-zero and denormals-are-zero on; the caller's own mode
 * (JavaScript's, which needs IEEE denormals) is restored when the op returns. */
#if defined(__x86_64__)
#define FTZ_DAZ 0x8040u
static inline unsigned fast_float_mode(void) {
  unsigned saved = __builtin_ia32_stmxcsr();
  __builtin_ia32_ldmxcsr(saved | FTZ_DAZ);
  return saved;
}
static inline void restore_float_mode(unsigned saved) { __builtin_ia32_ldmxcsr(saved); }
#elif defined(__aarch64__)
static inline uint64_t fast_float_mode(void) {
  uint64_t saved;
  __asm__ __volatile__("mrs %0, fpcr" : "=r"(saved));
  __asm__ __volatile__("msr fpcr, %0" ::"r"(saved | (1ull << 24)));
  return saved;
}
static inline void restore_float_mode(uint64_t saved) { __asm__ __volatile__("msr fpcr, %0" ::"r"(saved)); }
#else
static inline int fast_float_mode(void) { return 0; }
static inline void restore_float_mode(int saved) { (void)saved; }
#endif

static void run_chunks(void) {
  for (;;) {
    int64_t begin = __atomic_fetch_add(&pool.next, pool.chunk, __ATOMIC_ACQ_REL);
    if (begin >= pool.n) return;
    int64_t end = begin + pool.chunk < pool.n ? begin + pool.chunk : pool.n;
    pool.fn(pool.ctx, begin, end);
  }
}

static int64_t now_ns(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (int64_t)ts.tv_sec * 1000000000LL + ts.tv_nsec;
}

static void* worker(void* arg) {
  (void)arg;
  uint64_t seen = 0;
  fast_float_mode(); /* a worker only ever computes */
  for (;;) {
    uint64_t gen;
    int64_t until = now_ns() + spin_ns;
    for (int spins = 0; (gen = __atomic_load_n(&pool.generation, __ATOMIC_ACQUIRE)) == seen; spins++) {
      cpu_relax();
      if ((spins & 255) == 0 && now_ns() > until) break;
    }
    if (gen == seen) {
      pthread_mutex_lock(&pool.mu);
      __atomic_add_fetch(&pool.sleepers, 1, __ATOMIC_SEQ_CST);
      while ((gen = __atomic_load_n(&pool.generation, __ATOMIC_SEQ_CST)) == seen) pthread_cond_wait(&pool.cv, &pool.mu);
      __atomic_sub_fetch(&pool.sleepers, 1, __ATOMIC_SEQ_CST);
      pthread_mutex_unlock(&pool.mu);
    }
    seen = gen;
    run_chunks();
    __atomic_sub_fetch(&pool.active, 1, __ATOMIC_ACQ_REL);
  }
  return NULL;
}

int dbc_pool_start(int threads) {
  if (pool.threads > 0) return DBC_OK;
  if (threads <= 0) {
    long n = sysconf(_SC_NPROCESSORS_ONLN);
#ifdef __linux__
    /* a process pinned to some cores (taskset, a cgroup) gets as many threads as it may use, not one per core */
    cpu_set_t set;
    if (sched_getaffinity(0, sizeof set, &set) == 0 && CPU_COUNT(&set) > 0) n = CPU_COUNT(&set);
#endif
    threads = n > 0 ? (int)n : 1;
  }
#ifdef DBC_OPENBLAS
  /* OpenBLAS keeps its own pool (one thread per core, spinning between calls): size it like ours so the large GEMMs
   * use the same cores and no idle BLAS thread spins on a core another process (or stage) computes on */
  openblas_set_num_threads(threads > 256 ? 256 : threads);
#endif
  if (threads > 256) threads = 256;
  const char* spin = getenv("DBCLUSTER_SPIN_US");
  if (spin && *spin) spin_ns = atoll(spin) * 1000LL;
  pool.tids = calloc((size_t)threads, sizeof(pthread_t));
  if (!pool.tids) return dbc_fail(DBC_E_NOMEM, "thread pool: out of memory");
  for (int i = 1; i < threads; i++) {
    if (pthread_create(&pool.tids[i], NULL, worker, NULL) != 0) {
      threads = i; /* run with the threads we got */
      break;
    }
    pthread_detach(pool.tids[i]);
  }
  pool.threads = threads;
  return DBC_OK;
}

int dbc_pool_threads(void) { return pool.threads > 0 ? pool.threads : 1; }

void dbc_parallel_for(int64_t n, int64_t min_chunk, dbc_range_fn fn, void* ctx) {
  if (n <= 0) return;
  if (min_chunk < 1) min_chunk = 1;
  const __typeof__(fast_float_mode()) mode = fast_float_mode();
  if (pool.threads <= 1 || n <= min_chunk || pthread_mutex_trylock(&pool.submit) != 0) {
    fn(ctx, 0, n);
    restore_float_mode(mode);
    return;
  }
  int64_t chunk = (n + pool.threads * 4 - 1) / (pool.threads * 4);
  if (chunk < min_chunk) chunk = min_chunk;
  pool.fn = fn;
  pool.ctx = ctx;
  pool.n = n;
  pool.chunk = chunk;
  __atomic_store_n(&pool.next, 0, __ATOMIC_RELAXED);
  __atomic_store_n(&pool.active, pool.threads - 1, __ATOMIC_RELAXED);
  __atomic_add_fetch(&pool.generation, 1, __ATOMIC_SEQ_CST);
  if (__atomic_load_n(&pool.sleepers, __ATOMIC_SEQ_CST) > 0) {
    pthread_mutex_lock(&pool.mu);
    pthread_cond_broadcast(&pool.cv);
    pthread_mutex_unlock(&pool.mu);
  }
  run_chunks();
  while (__atomic_load_n(&pool.active, __ATOMIC_ACQUIRE) > 0) cpu_relax();
  pthread_mutex_unlock(&pool.submit);
  restore_float_mode(mode);
}

/* Every op returns a fresh tensor, and a step's activations (a prompt chunk's, the logits of a batch) run to megabytes:
 * glibc would map each of those anew and unmap it when freed, so every step paid a page fault per 4 KiB again (measured
 * 7 of 18 ms for a 256-row projection in a VM). Up to 32 MiB (glibc's largest threshold) they come from the heap, and
 * freed memory stays there for the next step; larger ones (KV caches, weight copies) are still mapped on their own. */
static void keep_freed_memory(void) {
#ifdef __GLIBC__
  mallopt(M_MMAP_THRESHOLD, 32 << 20);
  mallopt(M_TRIM_THRESHOLD, 256 << 20);
#endif
}

int dbc_init(int threads) {
  keep_freed_memory();
  return dbc_pool_start(threads);
}
int dbc_thread_count(void) { return dbc_pool_threads(); }
