/*
 * process.h - the reference process as the bus sees it: the payload schemas bound to its
 * topics and services, and its members with the rights each needs and no more. The
 * demo and the tests set a broker up from these, and start one spbe-ikn per member.
 */
#ifndef SPBE_IKN_PROCESS_H
#define SPBE_IKN_PROCESS_H

#include <stddef.h>
#include <stdio.h>

#include "world.h"

/* broker settings: schema = "PATTERN=TYPE", service_schema = "SERVICE=REQUEST,REPLY" */
extern const char *const ikn_topic_schemas[];
extern const size_t ikn_n_topic_schemas;
extern const char *const ikn_service_schemas[];
extern const size_t ikn_n_service_schemas;

typedef struct ikn_member {
    char name[64];    /* "kemenkeu/simpeg" */
    const char *role; /* spbe-ikn ROLE; NULL for the observer (no process) */
    const char *instansi;
    const char *pub[3], *sub[2], *serve[2], *call[3], *roles[2]; /* NULL-terminated */
} ikn_member;

#define IKN_MEMBERS_MAX 24

/* The members of the process for the world's agencies: one ministry (K/L) member per
 * agency, Dukcapil, BKN, the portal, the IKN Authority, Kemenkeu's allowance
 * application, and an observer (ops, may call portal.status) for the demo. The K/L
 * members' patterns point into pubs (kept by the caller). Returns the count. */
size_t ikn_members(const ikn_world *w, ikn_member *out, char (*pubs)[2][96]);

/* The process's bindings as broker settings (libconfig syntax, docs/configuration.md)
 * into f; the caller adds data, listen and http. */
void ikn_write_bindings(FILE *f);

#endif
