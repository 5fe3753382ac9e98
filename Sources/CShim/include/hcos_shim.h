// What Glibc does not export to Swift (GNU extensions, ioctl request numbers built from
// macros), under hcos_ names. Nothing else lives here.
#ifndef HCOS_SHIM_H
#define HCOS_SHIM_H
#include <spawn.h>
#include <stdint.h>
#include <sys/types.h>

int hcos_pipe2_cloexec(int fds[2]);
int hcos_spawn_addchdir(posix_spawn_file_actions_t *actions, const char *path);
// The child closes every descriptor from `lowest` up, whatever the parent left inheritable.
int hcos_spawn_addclosefrom(posix_spawn_file_actions_t *actions, int lowest);

// sync_file_range: start writing a range's dirty pages back (wait = 0), or write them and wait
// until they are written (wait = 1). Not a durability guarantee: fsync still ends a write.
int hcos_writeback(int fd, int64_t offset, int64_t length, int wait);

// Block devices: size in bytes, re-read or resize one partition (BLKPG), flush buffers.
int hcos_block_size(int fd, uint64_t *bytes);
int hcos_blkpg_resize_partition(int fd, int partno, int64_t start_bytes, int64_t length_bytes);
int hcos_block_flush(int fd);
// ext4 online resize (EXT4_IOC_RESIZE_FS) on any fd of the mounted filesystem.
int hcos_ext4_resize(int fd, uint64_t new_blocks);

// accept4(SOCK_CLOEXEC): the accepted descriptor never leaks into a spawned child.
int hcos_accept_cloexec(int fd);
// SO_PEERCRED of a connected AF_UNIX socket (struct ucred is a GNU extension).
int hcos_peer_credentials(int fd, int32_t *pid, uint32_t *uid, uint32_t *gid);
// reboot(RB_AUTOBOOT): restart now, without systemd (the caller syncs first).
int hcos_reboot_now(void);
#endif
