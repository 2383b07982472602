#define _GNU_SOURCE
#include <fcntl.h>
#include <pthread.h>
#include <spawn.h>
#include <string.h>
#include <signal.h>
#include <sys/eventfd.h>
#include <sys/prctl.h>
#include <sys/timerfd.h>
#include <unistd.h>

#include "CDroverShims.h"

int drover_pipe_cloexec(int fds[2], int nonblocking) {
    return pipe2(fds, O_CLOEXEC | (nonblocking ? O_NONBLOCK : 0));
}

int drover_eventfd(void) {
    return eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
}

int drover_timerfd(void) {
    return timerfd_create(CLOCK_MONOTONIC, TFD_NONBLOCK | TFD_CLOEXEC);
}

int drover_timerfd_arm_at(int fd, unsigned long long nanoseconds) {
    struct itimerspec spec = {0};
    spec.it_value.tv_sec = (time_t)(nanoseconds / 1000000000ULL);
    spec.it_value.tv_nsec = (long)(nanoseconds % 1000000000ULL);
    return timerfd_settime(fd, TFD_TIMER_ABSTIME, &spec, NULL);
}

int drover_spawn_close_from(posix_spawn_file_actions_t *actions, int lowest) {
    return posix_spawn_file_actions_addclosefrom_np(actions, lowest);
}

void drover_set_thread_name(const char *name) {
    char buf[16];
    strncpy(buf, name, 15);
    buf[15] = 0;
    pthread_setname_np(pthread_self(), buf);
}

void drover_terminate_with_parent(int expected_parent) {
    prctl(PR_SET_PDEATHSIG, SIGTERM);
    if (getppid() != expected_parent) raise(SIGTERM);
}

// MARK: CRC32C

static uint32_t crc32c_table[256];
static int crc32c_mode;  // 0: not chosen yet, 1: table, 2: hardware

static void crc32c_choose(void) {
    for (uint32_t n = 0; n < 256; n++) {
        uint32_t c = n;
        for (int k = 0; k < 8; k++) c = (c & 1) ? (c >> 1) ^ 0x82F63B78u : c >> 1;
        crc32c_table[n] = c;
    }
#if defined(__x86_64__)
    __builtin_cpu_init();
    crc32c_mode = __builtin_cpu_supports("sse4.2") ? 2 : 1;
#else
    crc32c_mode = 1;
#endif
}

#if defined(__x86_64__)
__attribute__((target("sse4.2")))
static uint32_t crc32c_hardware(uint32_t crc, const unsigned char *p, size_t n) {
    uint64_t c = crc;
    while (n >= 8) {
        uint64_t word;
        memcpy(&word, p, 8);
        c = __builtin_ia32_crc32di(c, word);
        p += 8;
        n -= 8;
    }
    uint32_t c32 = (uint32_t)c;
    while (n--) c32 = __builtin_ia32_crc32qi(c32, *p++);
    return c32;
}
#endif

uint32_t drover_crc32c(uint32_t crc, const void *bytes, size_t length) {
    if (__builtin_expect(crc32c_mode == 0, 0)) crc32c_choose();
    const unsigned char *p = bytes;
    crc = ~crc;
#if defined(__x86_64__)
    if (crc32c_mode == 2) return ~crc32c_hardware(crc, p, length);
#endif
    while (length--) crc = crc32c_table[(crc ^ *p++) & 0xFF] ^ (crc >> 8);
    return ~crc;
}

int drover_crc32c_is_hardware(void) {
    if (crc32c_mode == 0) crc32c_choose();
    return crc32c_mode == 2;
}

int drover_fallocate(int fd, long long length) {
    return fallocate(fd, 0, 0, (off_t)length);
}

size_t drover_first_nonzero(const void *bytes, size_t length) {
    const unsigned char *p = bytes;
    size_t i = 0;
    while (i < length && ((uintptr_t)(p + i) & 7)) {
        if (p[i]) return i;
        i++;
    }
    for (; i + 8 <= length; i += 8) {
        uint64_t word;
        memcpy(&word, p + i, 8);
        if (word) break;
    }
    for (; i < length; i++) if (p[i]) return i;
    return length;
}

size_t drover_end_of_nonzero(const void *bytes, size_t length) {
    const unsigned char *p = bytes;
    size_t i = length;
    while (i >= 8) {
        uint64_t word;
        memcpy(&word, p + i - 8, 8);
        if (word) break;
        i -= 8;
    }
    while (i > 0 && !p[i - 1]) i--;
    return i;
}
