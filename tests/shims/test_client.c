/* shims_test_client: a separate client process for the shim tests, written in C against
 * processfork.h only (so the header is proven to be C, and every byte it checks goes
 * through its own mapping of the pool). Commands (all print to stdout, one fact per line):
 *
 *   prefill SOCK SEED N BASE [commit] [snapshot] [hold] [pages]
 *       branch from tokens BASE..BASE+N-1 (prints "reused R"), append the rest, write their
 *       KV under SEED; optionally commit, snapshot ("cid C"), print "pages p...", and with
 *       hold print "ready" and keep the session until stdin closes.
 *   verify SOCK checkout|fork CID SEED N
 *       a branch at CID; every token < N must read SEED's bytes.
 *   cow SOCK CID SEED SEED2 N EXTRA
 *       fork CID twice; the first appends EXTRA tokens under SEED2; the second must still
 *       read the original bytes (page hashes unchanged) while the first reads both.
 *   append-loop SOCK
 *       four branches appending and writing forever; prints "ready" after the first round.
 *   reuse SOCK SEED NCOMMON NEXTRA BASE
 *       branch from BASE..BASE+NCOMMON+NEXTRA-1; prints "reused R"; tokens < R must read
 *       SEED's bytes (written by another process).
 *
 * Exit: 0 ok, 1 a check failed, 2 usage, 3 a library call failed. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "tests/shims/kv_pattern.h"

static pf_client* g_client;
static pf_pool_info g_info;

static void die_call(const char* what, pf_result r) {
  fprintf(stderr, "error %s %s: %s\n", what, pf_result_string(r), pf_last_error_message(NULL));
  exit(3);
}

#define CALL(expr)                        \
  do {                                    \
    pf_result r_ = (expr);                \
    if (r_ != PF_OK) die_call(#expr, r_); \
  } while (0)

static void connect_to(const char* sock) {
  pf_connect_config cfg = PF_CONNECT_CONFIG_INIT;
  cfg.socket_path = sock;
  CALL(pf_connect(&cfg, &g_client));
  g_info.struct_size = sizeof g_info;
  CALL(pf_pool_info_get(g_client, &g_info));
}

static uint64_t u64(const char* s) {
  return strtoull(s, NULL, 10);
}

static void* page(uint32_t id) {
  void* p = NULL;
  CALL(pf_page_ptr(g_client, id, &p));
  return p;
}

/* Appends tokens and writes each new token's KV at its write run under `seed`. */
static pf_append_result append_and_write(pf_branch_id b, const uint32_t* tokens, size_t n,
                                         uint64_t seed) {
  pf_append_result res;
  size_t cap = pf_append_max_runs(g_client, n);
  pf_write_run* runs = calloc(cap ? cap : 1, sizeof *runs);
  CALL(pf_append(g_client, b, tokens, n, runs, cap, &res));
  for (size_t i = 0; i < res.n_runs; ++i) {
    void* p = page(runs[i].page);
    for (uint32_t k = 0; k < runs[i].count; ++k) {
      kvp_write_token(&g_info, p, runs[i].first_slot + k, seed, runs[i].first_token + k);
    }
  }
  free(runs);
  return res;
}

static uint32_t* view_pages(pf_branch_id b, pf_branch_info* info) {
  CALL(pf_branch_view(g_client, b, info, NULL, 0, NULL, 0));
  uint32_t* pages = calloc(info->n_pages ? info->n_pages : 1, sizeof *pages);
  CALL(pf_branch_view(g_client, b, info, pages, info->n_pages, NULL, 0));
  return pages;
}

/* Number of tokens in [from, to) of branch b that do not read `seed`'s bytes. */
static uint64_t count_mismatches(pf_branch_id b, uint64_t from, uint64_t to, uint64_t seed) {
  pf_branch_info info;
  uint32_t* pages = view_pages(b, &info);
  uint64_t bad = 0;
  for (uint64_t t = from; t < to; ++t) {
    const void* p = page(pages[t / g_info.page_tokens]);
    if (!kvp_check_token(&g_info, p, (uint32_t)(t % g_info.page_tokens), seed, t)) {
      if (bad == 0) fprintf(stderr, "first mismatch at token %llu\n", (unsigned long long)t);
      ++bad;
    }
  }
  free(pages);
  return bad;
}

static uint64_t hash_pages(pf_branch_id b) {
  pf_branch_info info;
  uint32_t* pages = view_pages(b, &info);
  uint64_t h = KVP_HASH_INIT;
  for (uint64_t i = 0; i < info.n_pages; ++i) h = kvp_hash(page(pages[i]), g_info.page_bytes, h);
  free(pages);
  return h;
}

static int cmd_prefill(int argc, char** argv) {
  if (argc < 6) return 2;
  connect_to(argv[2]);
  const uint64_t seed = u64(argv[3]);
  const size_t n = (size_t)u64(argv[4]);
  const uint32_t base = (uint32_t)u64(argv[5]);
  int commit = 0, snapshot = 0, hold = 0, print_pages = 0;
  for (int i = 6; i < argc; ++i) {
    if (strcmp(argv[i], "commit") == 0)
      commit = 1;
    else if (strcmp(argv[i], "snapshot") == 0)
      snapshot = 1;
    else if (strcmp(argv[i], "hold") == 0)
      hold = 1;
    else if (strcmp(argv[i], "pages") == 0)
      print_pages = 1;
    else
      return 2;
  }
  uint32_t* tokens = calloc(n ? n : 1, sizeof *tokens);
  for (size_t i = 0; i < n; ++i) tokens[i] = base + (uint32_t)i;
  pf_new_branch nb;
  CALL(pf_branch_create(g_client, tokens, n, &nb));
  printf("reused %llu\n", (unsigned long long)nb.reused_tokens);
  if (nb.n_tokens < n) append_and_write(nb.branch, tokens + nb.n_tokens, n - nb.n_tokens, seed);
  if (commit) CALL(pf_commit(g_client, nb.branch));
  if (snapshot) {
    pf_snapshot_result s;
    CALL(pf_snapshot(g_client, nb.branch, "prefill", &s));
    printf("cid %s\n", s.cid);
  }
  printf("branch %llu\n", (unsigned long long)nb.branch);
  if (print_pages) {
    pf_branch_info info;
    uint32_t* pages = view_pages(nb.branch, &info);
    printf("pages");
    for (uint64_t i = 0; i < info.n_pages; ++i) printf(" %u", pages[i]);
    printf("\n");
    free(pages);
  }
  free(tokens);
  if (hold) {
    printf("ready\n");
    fflush(stdout);
    char buf[64];
    while (read(0, buf, sizeof buf) > 0) {
    }
  }
  pf_disconnect(g_client);
  return 0;
}

static int cmd_verify(int argc, char** argv) {
  if (argc != 7) return 2;
  connect_to(argv[2]);
  const char* cid = argv[4];
  const uint64_t seed = u64(argv[5]);
  const uint64_t n = u64(argv[6]);
  pf_branch_id b = 0;
  if (strcmp(argv[3], "checkout") == 0) {
    CALL(pf_checkout(g_client, cid, &b, NULL, 0));
  } else if (strcmp(argv[3], "fork") == 0) {
    pf_source src = pf_source_named(cid);
    CALL(pf_fork(g_client, &src, 1, &b, 1, NULL, 0));
  } else {
    return 2;
  }
  pf_branch_info info;
  CALL(pf_branch_view(g_client, b, &info, NULL, 0, NULL, 0));
  if (info.n_tokens != n) {
    printf("length %llu, expected %llu\n", (unsigned long long)info.n_tokens,
           (unsigned long long)n);
    return 1;
  }
  const uint64_t bad = count_mismatches(b, 0, n, seed);
  printf(bad == 0 ? "ok\n" : "mismatches %llu\n", (unsigned long long)bad);
  pf_disconnect(g_client);
  return bad == 0 ? 0 : 1;
}

static int cmd_cow(int argc, char** argv) {
  if (argc != 8) return 2;
  connect_to(argv[2]);
  const pf_source src = pf_source_named(argv[3]);
  const uint64_t seed = u64(argv[4]);
  const uint64_t seed2 = u64(argv[5]);
  const uint64_t n = u64(argv[6]);
  const size_t extra = (size_t)u64(argv[7]);
  pf_branch_id kids[2];
  CALL(pf_fork(g_client, &src, 2, kids, 2, NULL, 0));
  const uint64_t before = hash_pages(kids[1]);
  uint32_t* tokens = calloc(extra ? extra : 1, sizeof *tokens);
  for (size_t i = 0; i < extra; ++i) tokens[i] = 7000000u + (uint32_t)i;
  const pf_append_result res = append_and_write(kids[0], tokens, extra, seed2);
  free(tokens);
  int failed = 0;
  const uint32_t expect_copy = (n % g_info.page_tokens) != 0;
  if (res.copied_page != expect_copy) {
    printf("copied_page %u, expected %u\n", res.copied_page, expect_copy);
    failed = 1;
  }
  if (count_mismatches(kids[0], 0, n, seed) != 0) {
    printf("writer lost the shared prefix\n");
    failed = 1;
  }
  if (count_mismatches(kids[0], n, n + extra, seed2) != 0) {
    printf("writer does not read its own writes\n");
    failed = 1;
  }
  if (hash_pages(kids[1]) != before || count_mismatches(kids[1], 0, n, seed) != 0) {
    printf("the other fork sees the writer's bytes\n");
    failed = 1;
  }
  pf_branch_info xi, yi;
  uint32_t* xp = view_pages(kids[0], &xi);
  uint32_t* yp = view_pages(kids[1], &yi);
  const uint64_t last = yi.n_pages - 1;
  if (expect_copy && xp[last] == yp[last]) {
    printf("writer still shares the partial last page %u\n", yp[last]);
    failed = 1;
  }
  for (uint64_t i = 0; i + (expect_copy ? 1 : 0) < yi.n_pages; ++i) {
    if (xp[i] != yp[i]) {
      printf("full page %llu was copied (%u vs %u)\n", (unsigned long long)i, xp[i], yp[i]);
      failed = 1;
    }
  }
  free(xp);
  free(yp);
  if (!failed) printf("ok copied_page=%u\n", res.copied_page);
  pf_disconnect(g_client);
  return failed;
}

static int cmd_append_loop(int argc, char** argv) {
  if (argc != 3) return 2;
  connect_to(argv[2]);
  pf_branch_id b[4];
  for (int i = 0; i < 4; ++i) {
    pf_new_branch nb;
    CALL(pf_branch_create(g_client, NULL, 0, &nb));
    b[i] = nb.branch;
  }
  uint32_t tokens[8];
  for (uint64_t round = 0;; ++round) {
    for (int i = 0; i < 4; ++i) {
      for (int k = 0; k < 8; ++k) tokens[k] = (uint32_t)(9000000u + round * 8 + (uint64_t)k);
      append_and_write(b[i], tokens, 8, 77);
      pf_branch_info info;
      CALL(pf_branch_view(g_client, b[i], &info, NULL, 0, NULL, 0));
      if (info.n_tokens > 1024) CALL(pf_truncate(g_client, b[i], 3));
    }
    if (round == 0) {
      printf("ready\n");
      fflush(stdout);
    }
  }
}

static int cmd_reuse(int argc, char** argv) {
  if (argc != 7) return 2;
  connect_to(argv[2]);
  const uint64_t seed = u64(argv[3]);
  const size_t n = (size_t)(u64(argv[4]) + u64(argv[5]));
  const uint32_t base = (uint32_t)u64(argv[6]);
  uint32_t* tokens = calloc(n ? n : 1, sizeof *tokens);
  for (size_t i = 0; i < n; ++i) tokens[i] = base + (uint32_t)i;
  pf_new_branch nb;
  CALL(pf_branch_create(g_client, tokens, n, &nb));
  free(tokens);
  printf("reused %llu\n", (unsigned long long)nb.reused_tokens);
  const uint64_t bad = count_mismatches(nb.branch, 0, nb.reused_tokens, seed);
  printf(bad == 0 ? "ok\n" : "mismatches %llu\n", (unsigned long long)bad);
  pf_disconnect(g_client);
  return bad == 0 ? 0 : 1;
}

int main(int argc, char** argv) {
  if (argc < 3) return 2;
  if (strcmp(argv[1], "prefill") == 0) return cmd_prefill(argc, argv);
  if (strcmp(argv[1], "verify") == 0) return cmd_verify(argc, argv);
  if (strcmp(argv[1], "cow") == 0) return cmd_cow(argc, argv);
  if (strcmp(argv[1], "append-loop") == 0) return cmd_append_loop(argc, argv);
  if (strcmp(argv[1], "reuse") == 0) return cmd_reuse(argc, argv);
  return 2;
}
