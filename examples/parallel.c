/*
 * parallel.c: two questions at once, one connection per thread. libollm has
 * no global state, so threads with their own connections need no locking.
 *
 *   cc parallel.c $(pkg-config --cflags --libs ollm) -lpthread -o parallel
 *   ./parallel "first question" "second question"
 */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <ollm.h>

struct job {
	const char *question;
	char answer[4096];
	size_t len;
	int result;
	char error[600];
};

/* Collect the answer; printing from two threads at once would mix them. */
static int
collect_cb(struct ollm *c, uint64_t id, const struct ollm_delta *d, void *arg)
{
	struct job *j = arg;
	size_t n;

	(void)c;
	(void)id;
	if (d->content != NULL) {
		n = strlen(d->content);
		if (n > sizeof j->answer - 1 - j->len)
			n = sizeof j->answer - 1 - j->len;
		memcpy(j->answer + j->len, d->content, n);
		j->len += n;
		j->answer[j->len] = '\0';
	}
	return 0;
}

/* One thread: its own connection, one chat. */
static void *
ask(void *arg)
{
	struct job *j = arg;
	struct ollm_message msg = { "user", NULL, NULL, 0 };
	struct ollm *c;

	msg.content = j->question;
	if ((c = ollm_new()) == NULL) {
		j->result = OLLM_ERR_NOMEM;
		return NULL;
	}
	if ((j->result = ollm_connect(c, NULL)) == OLLM_OK)
		j->result = ollm_chat(c, &msg, 1, NULL, collect_cb, j, NULL);
	if (j->result != OLLM_OK)
		snprintf(j->error, sizeof j->error, "%s", ollm_last_error(c)->message);
	ollm_free(c);
	return NULL;
}

int
main(int argc, char **argv)
{
	struct job jobs[2];
	pthread_t t[2];
	int i, status = 0;

	if (argc != 3) {
		fprintf(stderr, "usage: %s QUESTION1 QUESTION2\n", argv[0]);
		return 64;
	}
	memset(jobs, 0, sizeof jobs);
	for (i = 0; i < 2; i++) {
		jobs[i].question = argv[i + 1];
		if (pthread_create(&t[i], NULL, ask, &jobs[i]) != 0)
			return 71;
	}
	for (i = 0; i < 2; i++)
		pthread_join(t[i], NULL);
	for (i = 0; i < 2; i++) {
		if (jobs[i].result == OLLM_OK)
			printf("%d: %s\n", i + 1, jobs[i].answer);
		else {
			printf("%d: error: %s: %s\n", i + 1, ollm_strerror(jobs[i].result),
			    jobs[i].error);
			status = 1;
		}
	}
	return status;
}
