/* floor_master.c: a policy-free master, the floor for ringmaster's on-demand spawning.
 *
 * Not ringmaster and shares no code with it. It binds one TCP listener and does nothing but
 * posix_spawn a worker (fd 3 = a status pipe, fd 4 = the listener, as Cyrus's protocol says)
 * while a client waits on the listener, with at most 8 workers starting at once; a worker
 * stops counting as starting when it notes CONNECTION (3) or exits. No prefork, no limits, no
 * reload, no logging. When started as root it becomes the workers' user (cyrus) after binding,
 * so that it spawns as cheaply as a master that runs as them. SIGTERM ends it (default action).
 *
 * With -1 it follows ringmaster's (and Cyrus's) spawning policy instead, to measure the spawn
 * path alone: a starting worker counts as ready, so it watches the listener only while no
 * worker is starting, and then forks one worker per connection waiting (the accept queue's
 * length, from TCP_INFO), at most 8.
 *
 * usage: floor_master [-1] HOST PORT WORKER [ARGS...]
 */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <pwd.h>
#include <spawn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

enum { MAX_STARTING = 8, CONNECTION = 3 };
extern char **environ;
static pid_t starting[MAX_STARTING];
static int nstarting;

static void forget(pid_t pid)
{
    for (int i = 0; i < nstarting; i++)
        if (starting[i] == pid) {
            starting[i] = starting[--nstarting];
            return;
        }
}

/* Connections in the accept queue of listener `fd` (at least 1: it was readable). */
static int waiting(int fd)
{
    struct tcp_info ti;
    socklen_t len = sizeof ti;
    memset(&ti, 0, sizeof ti);
    if (getsockopt(fd, IPPROTO_TCP, TCP_INFO, &ti, &len) < 0 || ti.tcpi_unacked == 0)
        return 1;
    return (int)ti.tcpi_unacked;
}

static int high_cloexec(int fd)
{
    int high = fcntl(fd, F_DUPFD_CLOEXEC, 10);
    close(fd);
    return high;
}

int main(int argc, char **argv)
{
    int one_per_waiting = argc > 1 && strcmp(argv[1], "-1") == 0;
    if (one_per_waiting) {
        argv++;
        argc--;
    }
    if (argc < 4) {
        fprintf(stderr, "usage: floor_master [-1] HOST PORT WORKER [ARGS...]\n");
        return 2;
    }
    struct sockaddr_in sin = { .sin_family = AF_INET, .sin_port = htons(atoi(argv[2])) };
    int one = 1, pipefd[2];
    int lfd = socket(AF_INET, SOCK_STREAM, 0);
    if (inet_pton(AF_INET, argv[1], &sin.sin_addr) != 1 || lfd < 0
        || setsockopt(lfd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one) < 0
        || bind(lfd, (struct sockaddr *)&sin, sizeof sin) < 0 || listen(lfd, 1024) < 0
        || pipe(pipefd) < 0) {
        perror("floor_master: listen");
        return 1;
    }
    lfd = high_cloexec(lfd);
    int rfd = high_cloexec(pipefd[0]), wfd = high_cloexec(pipefd[1]);
    struct passwd *pw = getuid() == 0 ? getpwnam("cyrus") : NULL;
    if (pw && (setgid(pw->pw_gid) < 0 || setuid(pw->pw_uid) < 0)) {
        perror("floor_master: setuid");
        return 1;
    }
    setenv("CYRUS_SERVICE", "floor", 1);
    setenv("CYRUS_ID", "0", 1);
    posix_spawn_file_actions_t fa;
    posix_spawn_file_actions_init(&fa);
    posix_spawn_file_actions_adddup2(&fa, wfd, 3);
    posix_spawn_file_actions_adddup2(&fa, lfd, 4);
    for (;;) {
        struct pollfd p[2] = { { rfd, POLLIN, 0 }, { lfd, POLLIN, 0 } };
        /* Watch the listener only while fewer than 8 workers are starting (with -1: while none
         * is); otherwise wait for a note, with a short timeout to reap workers that died
         * before noting. */
        int watch = one_per_waiting ? nstarting == 0 : nstarting < MAX_STARTING;
        int n = poll(p, watch ? 2 : 1, nstarting ? 10 : -1);
        if (n < 0 && errno != EINTR)
            return 1;
        if (p[0].revents & POLLIN) {
            int msg[64];
            ssize_t got = read(rfd, msg, sizeof msg);
            for (ssize_t i = 0; i + 1 < got / (ssize_t)sizeof(int); i += 2)
                if (msg[i] == CONNECTION)
                    forget(msg[i + 1]);
        }
        pid_t dead;
        while ((dead = waitpid(-1, NULL, WNOHANG)) > 0)
            forget(dead);
        if (watch && n > 0 && (p[1].revents & POLLIN)) {
            int forks = one_per_waiting ? waiting(lfd) : 1;
            for (int i = 0; i < forks && nstarting < MAX_STARTING; i++) {
                pid_t pid;
                if (posix_spawn(&pid, argv[3], &fa, NULL, argv + 3, environ) == 0)
                    starting[nstarting++] = pid;
            }
        }
    }
}
