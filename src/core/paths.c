/*
 * paths.c - see paths.h.
 */
#include "core/paths.h"

#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

int paths_is_dir(const char *path) {
    struct stat st;
    return stat(path, &st) == 0 && S_ISDIR(st.st_mode);
}

const char *paths_find_dir(const char *explicit_dir, const char *env_name, const char *beside_exe,
                           const char *fallback, char *buf, size_t size) {
    const char *env = env_name ? getenv(env_name) : NULL;
    if (explicit_dir && *explicit_dir) {
        snprintf(buf, size, "%s", explicit_dir);
        return buf;
    }
    if (env && *env) {
        snprintf(buf, size, "%s", env);
        return buf;
    }
    char exe[PATH_MAX];
    ssize_t n = readlink("/proc/self/exe", exe, sizeof exe - 1);
    if (n > 0) {
        exe[n] = '\0';
        char *slash = strrchr(exe, '/');
        if (slash) {
            *slash = '\0';
            snprintf(buf, size, "%s/%s", exe, beside_exe);
            if (paths_is_dir(buf))
                return buf;
        }
    }
    snprintf(buf, size, "%s", fallback);
    return buf;
}
