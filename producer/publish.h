/*
 * publish - the publishing commands of `sluice`, built on libsluice and
 * linked into the `sluice` program (whose command table is cli/cli.c).
 * Same contract as every command there: argv[0] is the command name, the
 * return value is the exit status (0 ok, 1 failure, 2 bad usage or
 * config). Main thread.
 */
#ifndef SLUICE_PUBLISH_H
#define SLUICE_PUBLISH_H

#include "cmdline.h"

int cli_send(int argc, char **argv);       /* sluice send --from A --to B,C ... */
int cli_template(int argc, char **argv);   /* sluice template put ID FILE */
int cli_bulk(int argc, char **argv);       /* sluice bulk --template ID --recipients F */

#endif
