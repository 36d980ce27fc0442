/* SPDX-License-Identifier: MIT */
#include "config.h"
#include <mproc.h>
#include "bench/mpbench.h"
static int
run(const struct mpb_opts *o)
{
	(void)o;
	return 0;
}
MPB_SUITE(pipe, "Pipe", run)
