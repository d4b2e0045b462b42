/*
 * paths.h - finding the folders upres ships with (models, web), the same way
 * for each: an explicit setting, else an environment variable, else a folder
 * next to the executable, else a path compiled in (the source tree's).
 */
#ifndef UPRES_CORE_PATHS_H
#define UPRES_CORE_PATHS_H

#include <stddef.h>

/*
 * explicit_dir (non-NULL, non-empty) wins, then $env_name, then
 * <executable's folder>/<beside_exe> when that is a folder, then fallback.
 * Written into buf (size bytes); returns buf.
 */
const char *paths_find_dir(const char *explicit_dir, const char *env_name, const char *beside_exe,
                           const char *fallback, char *buf, size_t size);

/* 1 when path is a folder. */
int paths_is_dir(const char *path);

#endif
