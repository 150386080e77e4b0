/* min_worker.c: the cheapest worker that speaks the Cyrus master protocol, for benchmarks.
 *
 * fd 3 is the master's status pipe, fd 4 the listening socket. It sends AVAILABLE when it
 * starts (unless --no-announce), then accepts in a blocking loop: CONNECTION on each client,
 * "* OK min_worker\r\n", reads until the client closes, AVAILABLE again, and exits after
 * -U uses (0: no limit).
 * SIGHUP makes an idle worker exit 0 at once and a busy one once its client is done, and
 * SIGTERM exit 75 at once, as a Cyrus service does: a worker killed by the signal would
 * count as a crash to Cyrus's master, which then throttles the service, and a busy worker
 * that left on SIGHUP would cut its client off, a loss the benchmark would lay at the
 * master's door.
 *
 * With -r PATH it also sends its pid, once ready, as one datagram to the UNIX socket PATH:
 * that is how the benchmark sees each worker become ready without reading the master's pipe.
 *
 * Built by ringmaster-bench at run time with `cc -O2` (statically when libc.a is there).
 */
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

enum { STATUS_FD = 3, LISTEN_FD = 4, AVAILABLE = 1, CONNECTION = 3 };

static void note(int message, int pid)
{
    int msg[2] = { message, pid };
    /* One write of 8 bytes; a master gone away is no reason to stop serving. */
    (void)!write(STATUS_FD, msg, sizeof msg);
}

/* Set while a client is served: SIGHUP then only asks the worker to go once it is done. */
static volatile sig_atomic_t busy;
static volatile sig_atomic_t hup_seen;
/* The descriptor every accept returns: the lowest free one, as the worker opens nothing
 * else while it serves and closes each client before the next accept. */
static int client_fd = -1;

static void on_hup(int sig)
{
    (void)sig;
    int saved = errno;
    /* Idle means not busy and no client just accepted: accept may have returned one and
     * this handler run before `busy = 1` (the signal is delivered on the way back from the
     * call, which can be long after the connection woke the worker), so its descriptor is
     * looked at too. */
    if (!busy && fcntl(client_fd, F_GETFD) == -1)
        _exit(0);
    hup_seen = 1;
    errno = saved;
}

static void on_term(int sig)
{
    (void)sig;
    _exit(75);
}

static void report_ready(const char *path, int pid)
{
    struct sockaddr_un sun = { .sun_family = AF_UNIX };
    int fd = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    if (fd < 0 || strlen(path) >= sizeof sun.sun_path)
        return;
    strcpy(sun.sun_path, path);
    (void)!sendto(fd, &pid, sizeof pid, 0, (struct sockaddr *)&sun, sizeof sun);
    close(fd);
}

int main(int argc, char **argv)
{
    int announce = 1;
    long uses = 0;
    const char *report = NULL;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--no-announce"))
            announce = 0;
        else if (!strcmp(argv[i], "-U") && i + 1 < argc)
            uses = atol(argv[++i]);
        else if (!strcmp(argv[i], "-r") && i + 1 < argc)
            report = argv[++i];
    }
    if (!getenv("CYRUS_SERVICE"))
        return 70; /* as Cyrus's services do outside a master */
    client_fd = dup(LISTEN_FD);
    if (client_fd < 0)
        return 1;
    close(client_fd);
    signal(SIGHUP, on_hup);
    signal(SIGTERM, on_term);
    int pid = getpid();
    if (announce)
        note(AVAILABLE, pid);
    if (report)
        report_ready(report, pid);
    static const char banner[] = "* OK min_worker\r\n";
    for (long served = 0; uses == 0 || served < uses;) {
        busy = 0;
        if (hup_seen)
            return 0; /* a SIGHUP came while the last client was served */
        int c = accept(LISTEN_FD, NULL, NULL);
        busy = 1;
        if (c < 0) {
            if (errno == EINTR || errno == ECONNABORTED || errno == EAGAIN)
                continue;
            return 1;
        }
        note(CONNECTION, pid);
        (void)!write(c, banner, sizeof banner - 1);
        /* Wait for the client to close first, as the demo worker does: a server that closes
         * first keeps each connection in TIME_WAIT, and at thousands of connections a second
         * from reused client ports, new SYNs meet them and are refused. */
        char buf[256];
        while (read(c, buf, sizeof buf) > 0)
            ;
        close(c);
        served++;
        if (hup_seen)
            return 0;
        if (uses == 0 || served < uses)
            note(AVAILABLE, pid);
    }
    return 0;
}
