#define _GNU_SOURCE
#include "hcos_shim.h"
#include <fcntl.h>
#include <linux/blkpg.h>
#include <linux/fs.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/reboot.h>
#include <sys/socket.h>
#include <unistd.h>

#ifndef EXT4_IOC_RESIZE_FS
#define EXT4_IOC_RESIZE_FS _IOW('f', 16, uint64_t)
#endif

int hcos_pipe2_cloexec(int fds[2]) { return pipe2(fds, O_CLOEXEC); }

int hcos_spawn_addchdir(posix_spawn_file_actions_t *actions, const char *path) {
    return posix_spawn_file_actions_addchdir_np(actions, path);
}

int hcos_spawn_addclosefrom(posix_spawn_file_actions_t *actions, int lowest) {
    return posix_spawn_file_actions_addclosefrom_np(actions, lowest);
}

int hcos_writeback(int fd, int64_t offset, int64_t length, int wait) {
    unsigned int flags = SYNC_FILE_RANGE_WRITE;
    if (wait) flags |= SYNC_FILE_RANGE_WAIT_BEFORE | SYNC_FILE_RANGE_WAIT_AFTER;
    return sync_file_range(fd, offset, length, flags);
}

int hcos_block_size(int fd, uint64_t *bytes) { return ioctl(fd, BLKGETSIZE64, bytes); }

int hcos_blkpg_resize_partition(int fd, int partno, int64_t start_bytes, int64_t length_bytes) {
    struct blkpg_partition part;
    memset(&part, 0, sizeof part);
    part.pno = partno;
    part.start = start_bytes;
    part.length = length_bytes;
    struct blkpg_ioctl_arg arg = {.op = BLKPG_RESIZE_PARTITION, .flags = 0, .datalen = sizeof part, .data = &part};
    return ioctl(fd, BLKPG, &arg);
}

int hcos_block_flush(int fd) { return ioctl(fd, BLKFLSBUF, 0); }

int hcos_ext4_resize(int fd, uint64_t new_blocks) { return ioctl(fd, EXT4_IOC_RESIZE_FS, &new_blocks); }

int hcos_accept_cloexec(int fd) { return accept4(fd, NULL, NULL, SOCK_CLOEXEC); }

int hcos_peer_credentials(int fd, int32_t *pid, uint32_t *uid, uint32_t *gid) {
    struct ucred cred;
    socklen_t length = sizeof cred;
    int result = getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &cred, &length);
    if (result != 0) return result;
    *pid = cred.pid;
    *uid = cred.uid;
    *gid = cred.gid;
    return 0;
}

int hcos_reboot_now(void) { return reboot(RB_AUTOBOOT); }
