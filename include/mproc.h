/* SPDX-License-Identifier: MIT */
#ifndef MPROC_H
#define MPROC_H

#include <mproc/common.h>
#include <mproc/pipe.h>
#include <mproc/process.h>
#include <mproc/queue.h>
#include <mproc/shm.h>
#include <mproc/pool.h>
#include <mproc/sync.h>
#include <mproc/manager.h>

#endif /* MPROC_H */
