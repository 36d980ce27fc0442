/* SPDX-License-Identifier: MIT */
/* Built by 'make installcheck' against the installed headers and mproc.pc. */
#include <mproc.h>
#include <stdio.h>
#include <string.h>

int
main(void)
{
	if (strcmp(mp_version(), MP_VERSION_STRING) != 0)
		return 1;
	printf("mproc %s, %d CPUs: %s\n", mp_version(), mp_cpu_count(),
	       mp_strerror(MP_EWORKER));
	return 0;
}
