/*
 * chat.c: the smallest libollm program: ask one question, print the answer
 * as it streams, then the usage.
 *
 *   cc chat.c $(pkg-config --cflags --libs ollm) -o chat
 *   ./chat "Why is the sky blue?"
 */
#include <stdio.h>
#include <stdlib.h>

#include <ollm.h>

/* Print each piece of the answer as it arrives. */
static int
print_cb(struct ollm *c, uint64_t id, const struct ollm_delta *d, void *arg)
{
	(void)c;
	(void)id;
	(void)arg;
	if (d->content != NULL) {
		fputs(d->content, stdout);
		fflush(stdout);
	}
	return 0;       /* non-zero would cancel the request */
}

int
main(int argc, char **argv)
{
	struct ollm *c;
	struct ollm_message msg = { "user", NULL, NULL, 0 };
	struct ollm_done done;
	int r;

	if (argc != 2) {
		fprintf(stderr, "usage: %s QUESTION\n", argv[0]);
		return 64;
	}
	msg.content = argv[1];

	if ((c = ollm_new()) == NULL)
		return 71;
	/* NULL: $OPENLLMD_SOCKET, else the default socket. */
	if ((r = ollm_connect(c, NULL)) != OLLM_OK ||
	    (r = ollm_chat(c, &msg, 1, NULL, print_cb, NULL, &done)) != OLLM_OK) {
		fprintf(stderr, "\n%s: %s\n", ollm_strerror(r), ollm_last_error(c)->message);
		ollm_free(c);
		return 1;
	}
	printf("\n[%s: %lld prompt + %lld completion tokens, cost %.4f]\n",
	    done.model != NULL ? done.model : "?",
	    (long long)done.usage.prompt_tokens,
	    (long long)done.usage.completion_tokens, done.cost);
	ollm_done_clear(&done);
	ollm_free(c);
	return 0;
}
