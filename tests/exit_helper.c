/* SPDX-License-Identifier: MIT */
/*
 * Run by tests/test_process (never on its own): a program that returns
 * from main with a daemon child and a plain child running.  mproc's exit
 * handler must terminate the daemon and join the plain child, which
 * prints "plain done" before this program's own atexit handler, registered
 * earlier and so run later, prints "main done".  It is a separate program
 * because a child forked inside a Criterion test must not run the test
 * runner's atexit handlers.
 */
#include <mproc.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

static int
plain(void *arg)
{
	int fd = *(int *)arg;
	char c;

	if (read(fd, &c, 1) != 1)
		return 3;
	printf("plain done\n");
	return 0;
}

static int
sleeper(void *arg)
{
	(void)arg;
	for (;;)
		pause();
	return 0;
}

static void
main_done(void)
{
	printf("main done\n");
	fflush(stdout);
}

/*
 * Still running at exit, so never freed (a free would detach them): kept
 * reachable here so that LeakSanitizer does not count them.
 */
static mp_process *d, *n;

int
main(void)
{
	mp_process_attr daemon = { .daemon = 1 };
	int go[2];

	if (pipe(go) < 0 || atexit(main_done) != 0)
		return 1;
	if (mp_process_new(&d, sleeper, NULL, &daemon) < 0 ||
	    mp_process_new(&n, plain, &go[0], NULL) < 0 ||
	    mp_process_start(d) < 0 || mp_process_start(n) < 0)
		return 2;
	printf("daemon %d\nplain %d\n", (int)mp_process_pid(d),
	       (int)mp_process_pid(n));
	fflush(stdout);
	/* The plain child finishes only after main has returned. */
	if (write(go[1], "x", 1) != 1)
		return 3;
	return 0;
}
