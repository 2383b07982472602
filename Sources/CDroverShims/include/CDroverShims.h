#ifndef DROVER_SHIMS_H
#define DROVER_SHIMS_H

// Linux calls that Swift's Glibc module does not expose (they sit behind _GNU_SOURCE),
// wrapped so Swift can call them. Nothing else belongs here.

/// pipe2(2) with O_CLOEXEC, so a pipe made on one thread never leaks into a child that
/// another thread spawns at the same moment. Returns 0 or -1 with errno set.
int drover_pipe_cloexec(int fds[2], int nonblocking);

/// An eventfd(2), non-blocking and close-on-exec. Returns the fd or -1 with errno set.
int drover_eventfd(void);

/// A timerfd(2) on CLOCK_MONOTONIC, non-blocking and close-on-exec. Returns the fd or -1.
int drover_timerfd(void);

/// Arms a timerfd to become readable once, at `nanoseconds` on CLOCK_MONOTONIC (absolute).
/// Returns 0 or -1 with errno set.
int drover_timerfd_arm_at(int fd, unsigned long long nanoseconds);

#include <spawn.h>

/// Adds "close every descriptor from `lowest` up" to a posix_spawn file-actions list, so a
/// spawned command inherits only stdin, stdout and stderr, not the worker's sockets or any
/// descriptor the worker itself inherited. Returns 0 or an errno value.
int drover_spawn_close_from(posix_spawn_file_actions_t *actions, int lowest);

/// Asks the kernel to send this process SIGTERM when the thread that started it exits, and
/// sends it now if that already happened (the parent is no longer `expected_parent`).
/// For children of `drover up` and `drover bench`, so none outlives a parent that was killed.
void drover_terminate_with_parent(int expected_parent);

/// Names the calling thread (at most 15 bytes are kept), for `top -H` and debuggers.
void drover_set_thread_name(const char *name);

#include <stddef.h>
#include <stdint.h>

/// CRC32C (Castagnoli) of `length` bytes, continuing from `crc` (0 to start): the SSE 4.2
/// instruction where the CPU has it, a table otherwise. For the broker's journal records.
uint32_t drover_crc32c(uint32_t crc, const void *bytes, size_t length);

/// Whether drover_crc32c uses the CPU's instruction (for the broker's start-up log).
int drover_crc32c_is_hardware(void);

/// The offset of the first non-zero byte among `length` bytes, or `length` when all are zero
/// (a journal segment's unused tail is checked this way, fast in any build).
size_t drover_first_nonzero(const void *bytes, size_t length);

/// One past the offset of the last non-zero byte among `length` bytes, or 0 when all are zero.
size_t drover_end_of_nonzero(const void *bytes, size_t length);

/// fallocate(2) of `length` bytes from offset 0 (mode 0: the file reads as zeros). Returns 0
/// or -1 with errno set.
int drover_fallocate(int fd, long long length);

#endif
