/*
 * fuzz_driver.c - a small stand-in for libFuzzer's main() where there is no
 * clang (gcc has no -fsanitize=fuzzer).
 *
 * Link it with a fuzz target (LLVMFuzzerTestOneInput) built with
 *     gcc -fsanitize=address,undefined -fsanitize-coverage=trace-pc,trace-cmp
 * and it fuzzes that target in-process, coverage-guided, as libFuzzer does:
 *
 *   - gcc's trace-pc hook (__sanitizer_cov_trace_pc, defined here) records
 *     the edges between basic blocks in a 64 Ki map (AFL-style: hash of the
 *     previous and the current block), hit counts bucketed 1, 2, 3, 4-7,
 *     8-15, 16-31, 32-127, 128+;
 *   - trace-cmp's constant comparisons (__sanitizer_cov_trace_const_cmp*,
 *     __sanitizer_cov_trace_switch) feed a dictionary of the constants the
 *     code compares against, which the mutator writes into inputs;
 *   - an input that reaches a new edge or a new bucket joins the corpus (and
 *     is written to the first corpus directory); inputs are mutated (bit and
 *     byte flips, interesting bytes, inserted / erased / copied chunks,
 *     dictionary words, crossover with another corpus input) in stacks of
 *     1 to 16 mutations.
 *
 * It is not libFuzzer (no value profile, no corpus minimisation, no fork
 * mode), but it takes the same command line, so the Makefile runs either:
 *
 *   fuzz_edfq [options] [DIR ...]    fuzz, seeded from the files in the DIRs
 *   fuzz_edfq [options] FILE ...     run each FILE once (regression replay)
 *
 *   -max_total_time=S   stop after S seconds (default 10)
 *   -runs=N             stop after N executions (default: unlimited)
 *   -seed=N             random seed (0 or none: from the clock; printed)
 *   -max_len=N          longest input generated (default 4096)
 *   -timeout=S          an input running longer than S seconds is a hang
 *                       (default 10): reported and saved like a crash
 *   -artifact_prefix=P  crash inputs are written to P + "crash-<hash>"
 *                       (default: the current directory)
 *   other -flag=value options are ignored (with a note), as in libFuzzer.
 *
 * While fuzzing, a crash - an abort() of the target, a sanitizer report (the
 * sanitizers' death callback; run with ASAN_OPTIONS / UBSAN_OPTIONS
 * abort_on_error=1, as the Makefile does, so that every report ends in
 * SIGABRT), a fatal signal, a hang - writes the input first, so it can be
 * replayed: fuzz_edfq crash-<hash> (a replay writes nothing: it names the file
 * it is running).  Exit status: 0 when the budget ran out with no crash;
 * otherwise the sanitizer's / signal's status.
 */
#define _POSIX_C_SOURCE 200809L

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* sanitizer_common's public interface (gcc's and clang's libasan / libubsan) */
void __sanitizer_set_death_callback(void (*callback)(void));

/* ---- coverage ---------------------------------------------------------------- */

#define MAP_BITS 16
#define MAP_SIZE (1u << MAP_BITS)

static uint8_t cov_map[MAP_SIZE];  /* hit counts of the current run */
static uint8_t seen_map[MAP_SIZE]; /* buckets seen by any run so far */
static uintptr_t prev_block;

void __sanitizer_cov_trace_pc(void);
void __sanitizer_cov_trace_pc(void)
{
    uintptr_t pc = (uintptr_t)__builtin_return_address(0);
    uintptr_t block = (pc ^ (pc >> MAP_BITS)) * (uintptr_t)0x9E3779B97F4A7C15ull;
    block >>= (sizeof(uintptr_t) * 8u - MAP_BITS);
    uint8_t *cell = &cov_map[(block ^ prev_block) & (MAP_SIZE - 1u)];
    if (*cell != 255)
        (*cell)++;
    prev_block = block >> 1;
}

/* ---- dictionary of compared constants (trace-cmp) ---------------------------- */

#define DICT_SIZE 256

static struct {
    uint64_t value;
    uint8_t width;
} dict[DICT_SIZE];
static unsigned dict_len;

static void dict_add(uint64_t value, uint8_t width)
{
    for (unsigned i = 0; i < dict_len; i++)
        if (dict[i].value == value && dict[i].width == width)
            return;
    if (dict_len < DICT_SIZE) {
        dict[dict_len].value = value;
        dict[dict_len].width = width;
        dict_len++;
    }
}

/* gcc emits these for -fsanitize-coverage=trace-cmp; the const_ ones have
 * the compile-time constant as their first argument. */
void __sanitizer_cov_trace_cmp1(uint8_t a, uint8_t b);
void __sanitizer_cov_trace_cmp2(uint16_t a, uint16_t b);
void __sanitizer_cov_trace_cmp4(uint32_t a, uint32_t b);
void __sanitizer_cov_trace_cmp8(uint64_t a, uint64_t b);
void __sanitizer_cov_trace_const_cmp1(uint8_t a, uint8_t b);
void __sanitizer_cov_trace_const_cmp2(uint16_t a, uint16_t b);
void __sanitizer_cov_trace_const_cmp4(uint32_t a, uint32_t b);
void __sanitizer_cov_trace_const_cmp8(uint64_t a, uint64_t b);
void __sanitizer_cov_trace_cmpf(float a, float b);
void __sanitizer_cov_trace_cmpd(double a, double b);
void __sanitizer_cov_trace_switch(uint64_t value, uint64_t *cases);

void __sanitizer_cov_trace_cmp1(uint8_t a, uint8_t b) { (void)a, (void)b; }
void __sanitizer_cov_trace_cmp2(uint16_t a, uint16_t b) { (void)a, (void)b; }
void __sanitizer_cov_trace_cmp4(uint32_t a, uint32_t b) { (void)a, (void)b; }
void __sanitizer_cov_trace_cmp8(uint64_t a, uint64_t b) { (void)a, (void)b; }
void __sanitizer_cov_trace_cmpf(float a, float b) { (void)a, (void)b; }
void __sanitizer_cov_trace_cmpd(double a, double b) { (void)a, (void)b; }

void __sanitizer_cov_trace_const_cmp1(uint8_t a, uint8_t b)
{
    (void)b;
    dict_add(a, 1);
}

void __sanitizer_cov_trace_const_cmp2(uint16_t a, uint16_t b)
{
    (void)b;
    dict_add(a, 2);
}

void __sanitizer_cov_trace_const_cmp4(uint32_t a, uint32_t b)
{
    (void)b;
    dict_add(a, 4);
}

void __sanitizer_cov_trace_const_cmp8(uint64_t a, uint64_t b)
{
    (void)b;
    dict_add(a, 8);
}

void __sanitizer_cov_trace_switch(uint64_t value, uint64_t *cases)
{
    /* cases[0]: number of cases, cases[1]: bit width, cases[2..]: values */
    (void)value;
    uint8_t width = (uint8_t)(cases[1] / 8u);
    for (uint64_t i = 0; i < cases[0] && i < 64; i++)
        dict_add(cases[2 + i], width ? width : 8);
}

/* ---- randomness ----------------------------------------------------------------- */

static uint64_t rng;

static uint64_t rnd(void) /* splitmix64 */
{
    uint64_t z = (rng += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

static size_t below(size_t n) /* uniform-ish in [0, n), n >= 1 */
{
    return (size_t)(rnd() % (uint64_t)n);
}

/* ---- the input being run (for the crash handlers) ------------------------------- */

static const uint8_t *cur_data;
static size_t cur_size;
static const char *artifact_prefix = "./";
static volatile sig_atomic_t crash_written;
static int save_artifacts = 1; /* 0 when replaying files: the input is a file already */

static uint64_t fnv1a(const uint8_t *p, size_t n)
{
    uint64_t h = 0xcbf29ce484222325ull;
    for (size_t i = 0; i < n; i++) {
        h ^= p[i];
        h *= 0x100000001b3ull;
    }
    return h;
}

/* Async-signal-safe: no stdio, no allocation. */
static void write_str(int fd, const char *s)
{
    size_t n = strlen(s);
    while (n > 0) {
        ssize_t w = write(fd, s, n);
        if (w <= 0)
            return;
        s += w;
        n -= (size_t)w;
    }
}

static void save_crash(const char *kind)
{
    if (crash_written || cur_data == NULL || !save_artifacts)
        return;
    crash_written = 1;
    char path[4096];
    static const char hex[] = "0123456789abcdef";
    uint64_t h = fnv1a(cur_data, cur_size);
    size_t n = strlen(artifact_prefix), k = strlen(kind);
    if (n + k + 18 >= sizeof path)
        return;
    memcpy(path, artifact_prefix, n);
    memcpy(path + n, kind, k);
    n += k;
    path[n++] = '-';
    for (int i = 15; i >= 0; i--)
        path[n++] = hex[(h >> (4 * i)) & 15u];
    path[n] = '\0';
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0644);
    if (fd >= 0) {
        size_t left = cur_size;
        const uint8_t *p = cur_data;
        while (left > 0) {
            ssize_t w = write(fd, p, left);
            if (w <= 0)
                break;
            p += w;
            left -= (size_t)w;
        }
        close(fd);
    }
    write_str(2, "==fuzz_driver== ");
    write_str(2, kind);
    write_str(2, ": the input is saved as ");
    write_str(2, path);
    write_str(2, "\n");
}

static void on_death(void) { save_crash("crash"); }

static void on_signal(int sig)
{
    save_crash(sig == SIGALRM ? "timeout" : "crash");
    signal(sig == SIGALRM ? SIGABRT : sig, SIG_DFL);
    raise(sig == SIGALRM ? SIGABRT : sig);
}

/* ---- files ---------------------------------------------------------------------- */

typedef struct {
    uint8_t *data;
    size_t size;
} unit_t;

static unit_t *corpus;
static size_t corpus_len, corpus_cap;

static int read_file(const char *path, unit_t *out, size_t max_len)
{
    FILE *f = fopen(path, "rb");
    if (!f)
        return -1;
    out->data = malloc(max_len ? max_len : 1);
    if (!out->data) {
        fclose(f);
        return -1;
    }
    out->size = fread(out->data, 1, max_len, f);
    fclose(f);
    return 0;
}

static void write_unit(const char *dir, const uint8_t *data, size_t size)
{
    char path[4096];
    int n = snprintf(path, sizeof path, "%s/%016llx", dir,
                     (unsigned long long)fnv1a(data, size));
    if (n <= 0 || (size_t)n >= sizeof path)
        return;
    FILE *f = fopen(path, "wb");
    if (!f)
        return;
    fwrite(data, 1, size, f);
    fclose(f);
}

static void corpus_add(const uint8_t *data, size_t size)
{
    if (corpus_len == corpus_cap) {
        size_t cap = corpus_cap ? 2 * corpus_cap : 64;
        unit_t *grown = realloc(corpus, cap * sizeof *grown);
        if (!grown)
            return;
        corpus = grown;
        corpus_cap = cap;
    }
    uint8_t *copy = malloc(size ? size : 1);
    if (!copy)
        return;
    if (size)
        memcpy(copy, data, size);
    corpus[corpus_len].data = copy;
    corpus[corpus_len].size = size;
    corpus_len++;
}

/* ---- running one input ------------------------------------------------------------- */

static unsigned timeout_s = 10;

/* Run the target once; 1 if the run reached a new edge or hit-count bucket. */
static int run_one(const uint8_t *data, size_t size)
{
    static const uint8_t bucket_of[9] = {0, 1, 2, 4, 8, 8, 8, 8, 16};
    memset(cov_map, 0, sizeof cov_map);
    prev_block = 0;
    cur_data = data;
    cur_size = size;
    if (timeout_s)
        alarm(timeout_s);
    LLVMFuzzerTestOneInput(data, size);
    if (timeout_s)
        alarm(0);
    cur_data = NULL;
    int fresh = 0;
    for (size_t i = 0; i < MAP_SIZE; i++) {
        uint8_t n = cov_map[i];
        if (!n)
            continue;
        uint8_t b = n <= 8 ? bucket_of[n] : n < 16 ? 16 : n < 32 ? 32 : n < 128 ? 64 : 128;
        if (!(seen_map[i] & b)) {
            seen_map[i] |= b;
            fresh = 1;
        }
    }
    return fresh;
}

static unsigned edges_seen(void)
{
    unsigned n = 0;
    for (size_t i = 0; i < MAP_SIZE; i++)
        n += seen_map[i] != 0;
    return n;
}

/* ---- mutation ---------------------------------------------------------------------- */

static size_t mutate(uint8_t *buf, size_t size, size_t max_len)
{
    static const uint8_t interesting[] = {0, 1, 2, 3, 4, 0x3f, 0x40, 0x7f,
                                          0x80, 0x81, 0xfe, 0xff};
    switch (below(11)) {
    case 0: /* flip a bit */
        if (size)
            buf[below(size)] ^= (uint8_t)(1u << below(8));
        break;
    case 1: /* a random byte */
        if (size)
            buf[below(size)] = (uint8_t)rnd();
        break;
    case 2: /* an interesting byte */
        if (size)
            buf[below(size)] = interesting[below(sizeof interesting)];
        break;
    case 3: /* +- a small amount */
        if (size) {
            size_t i = below(size);
            buf[i] = (uint8_t)(buf[i] + (uint8_t)(below(33)) - 16u);
        }
        break;
    case 4: { /* insert random bytes */
        size_t n = 1 + below(8);
        if (size + n > max_len)
            break;
        size_t at = below(size + 1);
        memmove(buf + at + n, buf + at, size - at);
        for (size_t i = 0; i < n; i++)
            buf[at + i] = (uint8_t)rnd();
        size += n;
        break;
    }
    case 5: { /* erase a chunk */
        if (size < 2)
            break;
        size_t n = 1 + below(size / 2);
        size_t at = below(size - n + 1);
        memmove(buf + at, buf + at + n, size - at - n);
        size -= n;
        break;
    }
    case 6: { /* copy a chunk elsewhere (overwrite) */
        if (size < 2)
            break;
        size_t n = 1 + below(size / 2);
        size_t from = below(size - n + 1), to = below(size - n + 1);
        memmove(buf + to, buf + from, n);
        break;
    }
    case 7: { /* duplicate a chunk (insert) */
        if (size < 1)
            break;
        size_t n = 1 + below(size < 32 ? size : 32);
        if (size + n > max_len)
            break;
        size_t from = below(size - n + 1), at = below(size + 1);
        uint8_t tmp[32];
        memcpy(tmp, buf + from, n);
        memmove(buf + at + n, buf + at, size - at);
        memcpy(buf + at, tmp, n);
        size += n;
        break;
    }
    case 8: { /* write a dictionary word (little-endian) */
        if (!dict_len)
            break;
        unsigned w = (unsigned)below(dict_len);
        size_t width = dict[w].width ? dict[w].width : 8;
        if (size < width)
            break;
        size_t at = below(size - width + 1);
        for (size_t k = 0; k < width; k++)
            buf[at + k] = (uint8_t)(dict[w].value >> (8 * k));
        break;
    }
    case 9: { /* crossover: the tail of another corpus input */
        if (!corpus_len)
            break;
        const unit_t *o = &corpus[below(corpus_len)];
        if (!o->size)
            break;
        size_t at = below(size + 1), from = below(o->size);
        size_t n = o->size - from;
        if (at + n > max_len)
            n = max_len - at;
        memcpy(buf + at, o->data + from, n);
        size = at + n;
        break;
    }
    default: /* overwrite a chunk with random bytes */
        if (size) {
            size_t at = below(size), n = 1 + below(8);
            for (size_t i = at; i < size && i < at + n; i++)
                buf[i] = (uint8_t)rnd();
        }
        break;
    }
    return size;
}

/* ---- main -------------------------------------------------------------------------- */

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

static int is_dir(const char *path)
{
    struct stat st;
    return stat(path, &st) == 0 && S_ISDIR(st.st_mode);
}

static void load_dir(const char *dir, size_t max_len)
{
    DIR *d = opendir(dir);
    if (!d)
        return;
    struct dirent *e;
    while ((e = readdir(d)) != NULL) {
        if (e->d_name[0] == '.')
            continue;
        char path[4096];
        int n = snprintf(path, sizeof path, "%s/%s", dir, e->d_name);
        if (n <= 0 || (size_t)n >= sizeof path || is_dir(path))
            continue;
        unit_t u;
        if (read_file(path, &u, max_len) == 0) {
            run_one(u.data, u.size); /* every seed is kept, whatever it covers */
            corpus_add(u.data, u.size);
            free(u.data);
        }
    }
    closedir(d);
}

int main(int argc, char **argv)
{
    double max_time = 10;
    unsigned long long max_runs = 0, seed = 0;
    int seeded = 0;
    size_t max_len = 4096;
    const char *dirs[64];
    const char *files[1024];
    size_t ndirs = 0, nfiles = 0;

    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (strncmp(a, "-max_total_time=", 16) == 0)
            max_time = strtod(a + 16, NULL);
        else if (strncmp(a, "-runs=", 6) == 0)
            max_runs = strtoull(a + 6, NULL, 10);
        else if (strncmp(a, "-seed=", 6) == 0) {
            seed = strtoull(a + 6, NULL, 10);
            seeded = seed != 0;
        } else if (strncmp(a, "-max_len=", 9) == 0)
            max_len = (size_t)strtoull(a + 9, NULL, 10);
        else if (strncmp(a, "-timeout=", 9) == 0)
            timeout_s = (unsigned)strtoul(a + 9, NULL, 10);
        else if (strncmp(a, "-artifact_prefix=", 17) == 0)
            artifact_prefix = a + 17;
        else if (a[0] == '-')
            fprintf(stderr, "fuzz_driver: ignoring option %s\n", a);
        else if (is_dir(a) && ndirs < sizeof dirs / sizeof dirs[0])
            dirs[ndirs++] = a;
        else if (!is_dir(a) && nfiles < sizeof files / sizeof files[0])
            files[nfiles++] = a;
    }
    if (max_len < 1)
        max_len = 1;
    if (!seeded)
        seed = (unsigned long long)time(NULL) ^ (unsigned long long)getpid();
    rng = seed;

    __sanitizer_set_death_callback(on_death);
    signal(SIGABRT, on_signal);
    signal(SIGSEGV, on_signal);
    signal(SIGBUS, on_signal);
    signal(SIGFPE, on_signal);
    signal(SIGILL, on_signal);
    signal(SIGALRM, on_signal);

    if (nfiles > 0) { /* replay mode, like StandaloneFuzzTargetMain */
        save_artifacts = 0;
        for (size_t i = 0; i < nfiles; i++) {
            fprintf(stderr, "fuzz_driver: running %s\n", files[i]);
            unit_t u;
            if (read_file(files[i], &u, 1u << 24) != 0) {
                fprintf(stderr, "fuzz_driver: cannot read %s: %s\n", files[i],
                        strerror(errno));
                return 2;
            }
            run_one(u.data, u.size);
            free(u.data);
            fprintf(stderr, "fuzz_driver: replayed %s: ok\n", files[i]);
        }
        printf("fuzz_driver: replayed %zu input(s), no crash\n", nfiles);
        return 0;
    }

    fprintf(stderr, "fuzz_driver: seed %llu, budget %.0f s, max_len %zu\n", seed,
            max_time, max_len);
    double t0 = now_s();
    for (size_t i = 0; i < ndirs; i++)
        load_dir(dirs[i], max_len);
    size_t seeds = corpus_len;
    if (corpus_len == 0) {
        run_one((const uint8_t *)"", 0);
        corpus_add((const uint8_t *)"", 0);
    }
    uint8_t *buf = malloc(max_len);
    if (!buf)
        return 2;
    unsigned long long runs = 0;
    double next_report = t0 + 10;
    for (;;) {
        if (max_runs && runs >= max_runs)
            break;
        if ((runs & 63u) == 0) {
            double t = now_s();
            if (t - t0 >= max_time)
                break;
            if (t >= next_report) {
                fprintf(stderr, "#%llu\tcov: %u corp: %zu exec/s: %.0f\n", runs,
                        edges_seen(), corpus_len, (double)runs / (t - t0));
                next_report = t + 10;
            }
        }
        const unit_t *base = &corpus[below(corpus_len)];
        size_t size = base->size < max_len ? base->size : max_len;
        memcpy(buf, base->data, size);
        size_t stack = (size_t)1 << below(5);
        for (size_t k = 0; k < stack; k++)
            size = mutate(buf, size, max_len);
        runs++;
        if (run_one(buf, size)) {
            corpus_add(buf, size);
            if (ndirs > 0)
                write_unit(dirs[0], buf, size);
        }
    }
    double elapsed = now_s() - t0;
    printf("fuzz_driver: done: %llu runs in %.1f s (%.0f exec/s), %zu seed inputs, "
           "corpus %zu inputs, %u edges, %u dictionary words, no crash\n",
           runs, elapsed, elapsed > 0 ? (double)runs / elapsed : 0.0, seeds,
           corpus_len, edges_seen(), dict_len);
    free(buf);
    for (size_t i = 0; i < corpus_len; i++)
        free(corpus[i].data);
    free(corpus);
    return 0;
}
