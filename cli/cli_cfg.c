/*
 * cli_cfg - `sluice config keys` lists every key a configuration file may
 * hold, from the loader's own key table (name, type, default, SLUICE_*
 * variable, one-line doc), so the listing cannot drift from what is
 * accepted; `sluice config check` loads a file and reports its first
 * mistake exactly as every daemon would (exit 2), or "ok".
 *
 * Main thread only; nothing is kept.
 */
#include "cli.h"
#include "config.h"

#include <getopt.h>
#include <stdio.h>
#include <string.h>

static const sl_cmd_help cfg_help = {
    .prog = "sluice config",
    .synopsis = "keys | check [-c FILE]",
    .about = "keys: list every configuration key, in the order a file is read, with its\n"
             "type, default, SLUICE_* override and what it does (docs/configuration.md\n"
             "has the details). check: load FILE (or $SLUICE_CONFIG) and report its\n"
             "first mistake, as every daemon would at start, or print \"ok\".",
    .options = "  -c, --config FILE   the file to check\n",
};

static void cfg_keys_print(void)
{
    size_t n = sl_config_key_count();
    for (size_t i = 0; i < n; i++) {
        sl_config_key_doc d;
        if (sl_config_key_get(i, &d) < 0)
            break;
        printf("%-38s %-10s %-14s %s", d.name, d.type, d.def ? d.def : "-", d.doc);
        if (d.env)
            printf(" (%s)", d.env);
        putchar('\n');
    }
}

int cli_cfg(int argc, char **argv)
{
    static const struct option opts[] = {
        {"config", required_argument, NULL, 'c'},
        {"help", no_argument, NULL, 'h'},
        {NULL, 0, NULL, 0},
    };
    const char *path = NULL;
    int o;
    if (sl_cmd_std(argc, argv, &cfg_help) >= 0)
        return 0;
    optind = 1;
    while ((o = getopt_long(argc, argv, "c:h", opts, NULL)) != -1) {
        switch (o) {
        case 'c': path = optarg; break;
        case 'h': sl_cmd_usage(&cfg_help, stdout); return 0;
        default: sl_cmd_usage(&cfg_help, stderr); return 2;
        }
    }
    if (optind + 1 != argc) {
        sl_cmd_usage(&cfg_help, stderr);
        return 2;
    }
    if (!strcmp(argv[optind], "keys")) {
        cfg_keys_print();
        return 0;
    }
    if (!strcmp(argv[optind], "check")) {
        sl_config *cfg = cli_config("config", path);
        if (!cfg)
            return 2;
        printf("ok: %s\n", cfg->path);
        sl_config_free(cfg);
        return 0;
    }
    sl_cmd_usage(&cfg_help, stderr);
    return 2;
}
