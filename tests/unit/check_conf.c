/* Unit tests of conf.c: defaults, MetaGPT names, environment, file:line errors. */
#include "config.h"

#include <check.h>
#include <ftw.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "daemon/conf.h"
#include "daemon/ledger.h"

static char test_dir[256];     /* this run's private directory, removed at the end */
static char conf_path[300];

/* Write text to a fresh temp file in test_dir, replacing the last one; its path is conf_path. */
static const char *
write_conf(const char *text)
{
	int fd;

	if (conf_path[0] != '\0')
		unlink(conf_path);
	snprintf(conf_path, sizeof conf_path, "%s/conf.XXXXXX", test_dir);
	fd = mkstemp(conf_path);
	ck_assert_int_ne(fd, -1);
	ck_assert_int_eq(write(fd, text, strlen(text)), (ssize_t)strlen(text));
	close(fd);
	return conf_path;
}

static void
setup(void)
{
	unsetenv("OPEN_LLM_API_BASE");
	unsetenv("OPEN_LLM_API_MODEL");
	unsetenv("OPENLLMD_SOCKET");
}

static void
teardown(void)
{
	if (conf_path[0] != '\0')
		unlink(conf_path);
	conf_path[0] = '\0';
}

START_TEST(test_defaults)
{
	char *errors;
	struct conf *c = conf_load(NULL, &errors);

	ck_assert_ptr_nonnull(c);
	ck_assert_uint_eq(c->n_upstreams, 1);
	ck_assert_str_eq(c->upstreams[0].base_url, "http://127.0.0.1:8080/v1");
	ck_assert_int_eq(c->upstreams[0].rpm, 0);      /* no limit unless asked */
	ck_assert_str_eq(c->upstreams[0].tokenizer, "cl100k_base");
	ck_assert(c->calc_usage);
	ck_assert(c->max_budget == 0);
	ck_assert_str_eq(c->fsync, "everysec");
	ck_assert_int_eq(c->socket_mode, 0660);
	ck_assert_ptr_null(c->fleet_postgres);     /* no fleet unless asked */
	ck_assert_ptr_null(c->fleet_node);
	ck_assert_str_eq(c->fleet_offline, "refuse");   /* budgets never go unchecked unless asked */
	conf_free(c);
}
END_TEST


START_TEST(test_metagpt_names)
{
	char *errors;
	const char *p = write_conf(
	    "open_llm_api_base = \"http://10.0.0.5:8000/v1/\";\n"
	    "open_llm_api_model = \"llama3\";\n"
	    "rpm = 3;\n"
	    "calc_usage = false;\n"
	    "max_budget = 2.5;\n");
	struct conf *c = conf_load(p, &errors);

	ck_assert_msg(c != NULL, "%s", errors ? errors : "");
	ck_assert_str_eq(c->upstreams[0].base_url, "http://10.0.0.5:8000/v1");
	ck_assert_str_eq(c->upstreams[0].model, "llama3");
	ck_assert_int_eq(c->upstreams[0].rpm, 3);
	ck_assert(!c->calc_usage);
	ck_assert(c->max_budget == 2.5);
	conf_free(c);
}
END_TEST

START_TEST(test_environment)
{
	char *errors;
	struct conf *c;

	setenv("OPEN_LLM_API_BASE", "http://127.0.0.1:9999/v1", 1);
	setenv("OPEN_LLM_API_MODEL", "qwen", 1);
	setenv("OPENLLMD_SOCKET", "/tmp/x.sock", 1);
	c = conf_load(NULL, &errors);
	ck_assert_ptr_nonnull(c);
	ck_assert_str_eq(c->upstreams[0].base_url, "http://127.0.0.1:9999/v1");
	ck_assert_str_eq(c->upstreams[0].model, "qwen");
	ck_assert_str_eq(c->socket_path, "/tmp/x.sock");
	conf_free(c);
}
END_TEST

START_TEST(test_systemd_directories)
{
	char *errors;
	struct conf *c;

	setenv("RUNTIME_DIRECTORY", "/run/openllmd", 1);
	setenv("STATE_DIRECTORY", "/var/lib/openllmd", 1);
	c = conf_load(NULL, &errors);
	unsetenv("RUNTIME_DIRECTORY");
	unsetenv("STATE_DIRECTORY");
	ck_assert_ptr_nonnull(c);
	ck_assert_str_eq(c->socket_path, "/run/openllmd/openllmd.sock");
	ck_assert_str_eq(c->state_dir, "/var/lib/openllmd");
	conf_free(c);
}
END_TEST

START_TEST(test_upstreams)
{
	char *errors;
	const char *p = write_conf(
	    "upstreams = (\n"
	    "  { name = \"a\"; base_url = \"http://127.0.0.1:1/v1\"; model = \"m\"; rpm = 10;\n"
	    "    max_concurrency = 2; prompt_price = 0.5; completion_price = 1; },\n"
	    "  { name = \"b\"; base_url = \"https://h/v1\"; model = \"m\"; timeout = 1.5; }\n"
	    ");\n");
	struct conf *c = conf_load(p, &errors);

	ck_assert_msg(c != NULL, "%s", errors ? errors : "");
	ck_assert_uint_eq(c->n_upstreams, 2);
	ck_assert_str_eq(c->upstreams[0].name, "a");
	ck_assert_int_eq(c->upstreams[0].rpm, 10);
	ck_assert_int_eq(c->upstreams[0].max_concurrency, 2);
	ck_assert(c->upstreams[0].prompt_price == 0.5);
	ck_assert(c->upstreams[0].completion_price == 1.0);
	ck_assert_int_eq(c->upstreams[1].rpm, 0);
	ck_assert(c->upstreams[1].timeout == 1.5);
	conf_free(c);
}
END_TEST

/* Load text and check that the errors contain want, with the file name. */
static void
expect_error(const char *text, const char *want)
{
	char *errors = NULL, full[512];
	const char *p = write_conf(text);
	struct conf *c = conf_load(p, &errors);

	ck_assert_ptr_null(c);
	ck_assert_ptr_nonnull(errors);
	snprintf(full, sizeof full, "%s:%s", p, want);
	ck_assert_msg(strstr(errors, full) != NULL, "want \"%s\" in \"%s\"", full, errors);
	free(errors);
}

START_TEST(test_errors_name_file_and_line)
{
	expect_error("log_level = \"info\";\nrpm = -1;\n", "2: rpm must be >= 0");
	expect_error("\n\nrmp = 3;\n", "3: unknown setting \"rmp\"");
	expect_error("fsync = \"sometimes\";\n", "1: fsync must be one of always|everysec|no");
	expect_error("max_budget = \"ten\";\n", "1: max_budget must be a number");
	expect_error("calc_usage = 1;\n", "1: calc_usage must be true or false");
	expect_error("socket_mode = \"999\";\n", "1: socket_mode must be an octal mode");
	expect_error("log_level = \"loud\";\n", "1: log_level must be error, warn, info or debug");
	expect_error("upstreams = ( { model = \"x\"; } );\n", "1: upstreams[0]: base_url is required");
	expect_error("upstreams = (\n { base_url = \"ftp://x\"; } );\n", "2: base_url must start with http");
	expect_error("upstreams = ( { name = \"a\"; base_url = \"http://x\"; },\n"
	    "{ name = \"a\"; base_url = \"http://y\"; } );\n", "2: upstream name \"a\" is used twice");
	expect_error("upstreams = ( { base_url = \"http://x\"; retries = 1000; } );\n",
	    "1: retries must be <= 100");
	expect_error("upstreams = ( { base_url = \"http://x\"; bogus = 1; } );\n",
	    "1: unknown setting \"bogus\"");
	expect_error("rpm = 3;\nstate_dir = = \"/x\";\n", "2: syntax error");
}
END_TEST

START_TEST(test_fleet)
{
	char *errors = NULL;
	char node[300];
	struct conf *c;

	c = conf_load(write_conf("fleet_postgres = \"host=/run/pg dbname=ollm\";\n"
	    "fleet_node = \"gpu1\";\nfleet_offline = \"local\";\n"), &errors);
	ck_assert_msg(c != NULL, "%s", errors ? errors : "");
	ck_assert_str_eq(c->fleet_postgres, "host=/run/pg dbname=ollm");
	ck_assert_str_eq(c->fleet_node, "gpu1");
	ck_assert_str_eq(c->fleet_offline, "local");
	conf_free(c);
	teardown();
	memset(node, 'n', sizeof node);
	node[sizeof node - 1] = '\0';
	{
		char text[400];
		snprintf(text, sizeof text, "\nfleet_node = \"%s\";\n", node);
		expect_error(text, "2: fleet_node is at most 255 bytes long");
	}
	expect_error("fleet_postgres = \"\";\n", "1: fleet_postgres must not be empty");
	expect_error("\nfleet_offline = \"serve\";\n",
	    "2: fleet_offline must be one of refuse|local, not \"serve\"");
	expect_error("fleet_postgres = 5;\n", "1: fleet_postgres must be a string");
	expect_error("\n\nfleet_postgres = \"host=x bogus=1\";\n",
	    "3: fleet_postgres is not a PostgreSQL connection string: invalid connection option \"bogus\"");
}
END_TEST

/* A tokenizer is a built-in name or an absolute path; nothing relative. */
START_TEST(test_tokenizer_names)
{
	static const char *const bad[] = { "cl100k", "../x.tiktoken", "x/o200k_base", "" };
	char text[256], *errors = NULL;
	struct conf *c;

	for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
		snprintf(text, sizeof text, "upstreams = ( { base_url = \"http://x\";\n"
		    "tokenizer = \"%s\"; } );\n", bad[i]);
		expect_error(text, *bad[i] != '\0' ? "2: tokenizer must be cl100k_base, "
		    "o200k_base or the absolute path of a .tiktoken file" :
		    "2: tokenizer must not be empty");
	}
	c = conf_load(write_conf("upstreams = ( { base_url = \"http://x\"; tokenizer = \"o200k_base\"; },\n"
	    "{ name = \"b\"; base_url = \"http://y\"; tokenizer = \"/opt/v.tiktoken\"; } );\n"),
	    &errors);
	ck_assert_msg(c != NULL, "%s", errors ? errors : "");
	ck_assert_str_eq(c->upstreams[0].tokenizer, "o200k_base");
	ck_assert_str_eq(c->upstreams[1].tokenizer, "/opt/v.tiktoken");
	conf_free(c);
}
END_TEST

START_TEST(test_every_problem_reported)
{
	char *errors = NULL;
	const char *p = write_conf("rpm = -1;\nfsync = \"x\";\nbogus = 2;\n");
	struct conf *c = conf_load(p, &errors);
	int lines = 0;

	ck_assert_ptr_null(c);
	for (const char *q = errors; *q != '\0'; q++)
		lines += *q == '\n';
	ck_assert_int_eq(lines, 3);
	free(errors);
}
END_TEST

START_TEST(test_missing_file)
{
	char *errors = NULL;
	struct conf *c = conf_load("/nonexistent/openllmd.conf", &errors);

	ck_assert_ptr_null(c);
	ck_assert_ptr_nonnull(strstr(errors, "/nonexistent/openllmd.conf: cannot read"));
	free(errors);
}
END_TEST

START_TEST(test_http_settings)
{
	char *errors;
	struct conf *c = conf_load(NULL, &errors);

	/* the default: one loopback port, whose bind failure is not fatal */
	ck_assert_ptr_nonnull(c);
	ck_assert_uint_eq(c->n_http_listen, 1);
	ck_assert_str_eq(c->http_listen[0], CONF_HTTP_LISTEN_DEFAULT);
	ck_assert(c->http_listen_default);
	ck_assert(!c->require_key);
	/* the HTTP front's limits */
	ck_assert_int_eq(c->max_clients_per_address, 0);
	ck_assert(c->http_header_timeout == 10 && c->http_body_timeout == 10);
	ck_assert_uint_eq(c->http_body_min_rate, 262144);
	ck_assert_uint_eq(c->http_max_inflight_body, 64u * 1024 * 1024);
	conf_free(c);

	c = conf_load(write_conf("max_clients_per_address = 9;\nhttp_header_timeout = 2.5;\n"
	    "http_body_timeout = 1;\nhttp_body_min_rate = 4096;\nhttp_max_inflight_body = 1048576;\n"),
	    &errors);
	ck_assert_msg(c != NULL, "%s", errors ? errors : "");
	ck_assert_int_eq(c->max_clients_per_address, 9);
	ck_assert(c->http_header_timeout == 2.5 && c->http_body_timeout == 1);
	ck_assert_uint_eq(c->http_body_min_rate, 4096);
	ck_assert_uint_eq(c->http_max_inflight_body, 1048576);
	conf_free(c);
	ck_assert_ptr_null(conf_load(write_conf("\nhttp_header_timeout = 0;\nhttp_body_min_rate = 10;\n"),
	    &errors));
	ck_assert_msg(strstr(errors, ":2: http_header_timeout must be >= 0.1") != NULL &&
	    strstr(errors, ":3: http_body_min_rate must be >= 1024") != NULL, "%s", errors);
	free(errors);

	c = conf_load(write_conf(
	    "http_listen = ( \"127.0.0.1:0\", \"[::1]:8642\", \"unix:/run/x.sock\" );\n"
	    "require_key = true;\n"
	    "api_keys = ( { sha256 = \"5E884898DA28047151D0E56F8DC6292773603D0D6AABBDD62A11EF721D1542D8\";\n"
	    "  user = \"0\"; tag = \"ci\"; },\n"
	    "  { sha256 = \"0000000000000000000000000000000000000000000000000000000000000000\"; user = \"root\"; } );\n"),
	    &errors);
	ck_assert_msg(c != NULL, "%s", errors ? errors : "");
	ck_assert_uint_eq(c->n_http_listen, 3);
	ck_assert(!c->http_listen_default);
	ck_assert_str_eq(c->http_listen[2], "unix:/run/x.sock");
	ck_assert(c->require_key);
	ck_assert_uint_eq(c->n_api_keys, 2);
	ck_assert_str_eq(c->api_keys[0].sha256,
	    "5e884898da28047151d0e56f8dc6292773603d0d6aabbdd62a11ef721d1542d8");
	ck_assert_str_eq(c->api_keys[0].tag, "ci");
	ck_assert_ptr_null(c->api_keys[1].tag);
	ck_assert_uint_eq(c->api_keys[1].uid, 0);
	conf_free(c);

	/* a key's user that is no system user is billed by name; a user budget may name it
	 * (names with a colon, which no passwd entry can hold: the host's users do not matter) */
	c = conf_load(write_conf(
	    "api_keys = ( { sha256 = \"5E884898DA28047151D0E56F8DC6292773603D0D6AABBDD62A11EF721D1542D8\";\n"
	    "  user = \"ci:alice\"; },\n"
	    "  { sha256 = \"0000000000000000000000000000000000000000000000000000000000000000\"; user = \"root\"; },\n"
	    "  { sha256 = \"1111111111111111111111111111111111111111111111111111111111111111\";\n"
	    "    user = \"Zo\\xc3\\xab's build bot\"; } );\n"
	    "budgets = ( { scope = \"user\"; who = \"ci:alice\"; unit = \"tokens\"; limit = 100; },\n"
	    "  { scope = \"user\"; who = \"root\"; unit = \"tokens\"; limit = 100; } );\n"),
	    &errors);
	ck_assert_msg(c != NULL, "%s", errors ? errors : "");
	ck_assert_uint_eq(c->n_api_keys, 3);
	ck_assert(c->api_keys[0].named);
	ck_assert_str_eq(c->api_keys[0].user, "ci:alice");
	ck_assert_uint_eq(c->api_keys[0].uid, LEDGER_UID_NAMED);
	ck_assert(!c->api_keys[1].named);
	ck_assert_uint_eq(c->api_keys[1].uid, 0);
	ck_assert(c->api_keys[2].named);
	ck_assert_str_eq(c->api_keys[2].user, "Zo\xc3\xab's build bot");
	ck_assert_uint_eq(c->n_budgets, 2);
	ck_assert(c->budgets[0].named);
	ck_assert_str_eq(c->budgets[0].who, "ci:alice");
	ck_assert(!c->budgets[1].named);
	ck_assert_uint_eq(c->budgets[1].uid, 0);
	conf_free(c);

	c = conf_load(write_conf("http_listen = ( );\n"), &errors);
	ck_assert_ptr_nonnull(c);
	ck_assert_uint_eq(c->n_http_listen, 0);
	conf_free(c);
}
END_TEST

START_TEST(test_http_errors)
{
	static const struct { const char *text, *want; } cases[] = {
		{ "http_listen = ( \"localhost\" );\n", ":1: http_listen[0] \"localhost\": expected" },
		{ "http_listen = ( \"127.0.0.1:99999\" );\n", ":1: http_listen[0] \"127.0.0.1:99999\": the port" },
		{ "http_listen = ( \"unix:relative\" );\n", ":1: http_listen[0] \"unix:relative\": unix: needs" },
		{ "http_listen = ( 8642 );\n", ":1: http_listen[0] must be a string" },
		{ "\napi_keys = ( { sha256 = \"abc\"; user = \"root\"; } );\n", ":2: api_keys[0]: sha256 must be 64 hex" },
		{ "api_keys = ( { sha256 = \"0000000000000000000000000000000000000000000000000000000000000000\"; } );\n",
		  ":1: api_keys[0]: user is required" },
		{ "api_keys = ( { sha256 = \"0000000000000000000000000000000000000000000000000000000000000000\";\n"
		  "  user = \"al\\nice\"; } );\n", ":1: api_keys[0]: user \"al\nice\": a name must not contain control" },
		{ "api_keys = ( { sha256 = \"0000000000000000000000000000000000000000000000000000000000000000\";\n"
		  "  user = \"a\\x7f\"; } );\n", ":1: api_keys[0]: user \"a\x7f\": a name must not contain control" },
		{ "api_keys = ( { sha256 = \"0000000000000000000000000000000000000000000000000000000000000000\";\n"
		  "  user = \"aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\"; } );\n",
		  ":1: api_keys[0]: user \"aaaaaaaaaa" },
		{ "api_keys = ( { sha256 = \"0000000000000000000000000000000000000000000000000000000000000000\";\n"
		  "  user = \"aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\"; } );\n",
		  "a name must be 1 to 64 bytes" },
		{ "api_keys = ( { sha256 = \"0000000000000000000000000000000000000000000000000000000000000000\";\n"
		  "  user = \"4294967295\"; } );\n", ":1: api_keys[0]: user \"4294967295\": a uid must be below" },
		{ "api_keys = ( { sha256 = \"0000000000000000000000000000000000000000000000000000000000000000\";\n"
		  "  user = \"caf\\xe9\"; } );\n", "a name must be UTF-8" },
		{ "api_keys = ( { sha256 = \"0000000000000000000000000000000000000000000000000000000000000000\";\n"
		  "  user = \"sur\\xed\\xa0\\x80\"; } );\n", "a name must be UTF-8" },
		{ "api_keys = ( { sha256 = \"0000000000000000000000000000000000000000000000000000000000000000\";\n"
		  "  user = \"ci:alice\"; } );\n"
		  "budgets = ( { scope = \"user\"; who = \"ci:carol\"; unit = \"tokens\"; limit = 5; } );\n",
		  ":3: budgets[0]: no user \"ci:carol\" (a system user name, a uid, or the user of an api_keys entry)" },
		{ "api_keys = ( { sha256 = \"0000000000000000000000000000000000000000000000000000000000000000\";\n"
		  "  user = \"root\"; key = \"x\"; } );\n", ":2: unknown setting \"key\"" },
		{ "api_keys = ( { sha256 = \"0000000000000000000000000000000000000000000000000000000000000000\"; user = \"root\"; },\n"
		  "  { sha256 = \"0000000000000000000000000000000000000000000000000000000000000000\"; user = \"root\"; } );\n",
		  ":2: api_keys[1]: the same key as api_keys[0]" },
		{ "require_key = 1;\n", ":1: require_key must be" },
	};

	for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
		char *errors = NULL;
		struct conf *c = conf_load(write_conf(cases[i].text), &errors);
		ck_assert_msg(c == NULL, "accepted: %s", cases[i].text);
		ck_assert_msg(errors != NULL && strstr(errors, cases[i].want) != NULL,
		    "for %s: wanted \"%s\" in \"%s\"", cases[i].text, cases[i].want,
		    errors ? errors : "(none)");
		free(errors);
		unlink(conf_path);
	}
}
END_TEST

START_TEST(test_client_limits_and_visibility)
{
	char *errors = NULL;
	struct conf *c = conf_load(NULL, &errors);

	ck_assert_ptr_nonnull(c);
	ck_assert_int_eq(c->max_clients, 0);            /* auto */
	ck_assert_int_eq(c->max_clients_per_uid, 0);
	ck_assert_str_eq(c->stats_visibility, "own");
	conf_free(c);
	c = conf_load(write_conf("max_clients = \"auto\";\nmax_clients_per_uid = 7;\n"
	    "stats_visibility = \"all\";\n"), &errors);
	ck_assert_msg(c != NULL, "%s", errors ? errors : "");
	ck_assert_int_eq(c->max_clients, 0);
	ck_assert_int_eq(c->max_clients_per_uid, 7);
	ck_assert_str_eq(c->stats_visibility, "all");
	conf_free(c);
	teardown();
	c = conf_load(write_conf("max_clients = 500;\n"), &errors);
	ck_assert_msg(c != NULL, "%s", errors ? errors : "");
	ck_assert_int_eq(c->max_clients, 500);
	conf_free(c);
	teardown();
	expect_error("max_clients = \"lots\";\n", "1: max_clients must be \"auto\" or an integer, not \"lots\"");
	expect_error("\nmax_clients_per_uid = 0;\n", "2: max_clients_per_uid must be >= 1");
	expect_error("stats_visibility = \"mine\";\n", "1: stats_visibility must be one of own|all, not \"mine\"");
}
END_TEST

/* Aliases as a group of names or a list of pairs; default_model; what is refused, and where. */
START_TEST(test_aliases)
{
	char *errors = NULL;
	struct conf *c = conf_load(write_conf(
	    "upstreams = ( { base_url = \"http://x\"; model = \"qwen2.5-coder-32b\"; } );\n"
	    "aliases = { claude-sonnet-4-5 = \"qwen2.5-coder-32b\"; gpt-4o = \"qwen\"; };\n"
	    "default_model = \"qwen2.5-coder-32b\";\n"), &errors);

	ck_assert_msg(c != NULL, "%s", errors ? errors : "");
	ck_assert_uint_eq(c->n_aliases, 2);
	ck_assert_str_eq(conf_alias_model(c, "claude-sonnet-4-5"), "qwen2.5-coder-32b");
	ck_assert_str_eq(conf_alias_model(c, "gpt-4o"), "qwen");
	ck_assert_ptr_null(conf_alias_model(c, "qwen"));
	ck_assert_ptr_null(conf_alias_model(c, NULL));
	ck_assert_str_eq(c->default_model, "qwen2.5-coder-32b");
	conf_free(c);
	c = conf_load(write_conf(
	    "aliases = ( { name = \"gpt-4.1\"; model = \"qwen2.5:7b\"; },\n"
	    "  { name = \"meta-llama/Llama-3\"; model = \"llama3:8b\"; } );\n"), &errors);
	ck_assert_msg(c != NULL, "%s", errors ? errors : "");
	ck_assert_str_eq(conf_alias_model(c, "gpt-4.1"), "qwen2.5:7b");
	ck_assert_str_eq(conf_alias_model(c, "meta-llama/Llama-3"), "llama3:8b");
	conf_free(c);
	expect_error("aliases = { a = \"b\"; c = \"a\"; };\n", "1: aliases: \"c\" names \"a\", "
	    "itself an alias");
	expect_error("aliases = { a = \"b\"; };\naliases2 = 1;\n", "2: unknown setting");
	expect_error("aliases = ( { name = \"a\"; model = \"b\"; },\n { name = \"a\"; model = \"c\"; } );\n",
	    "2: aliases: \"a\" is given twice");
	expect_error("aliases = { a = 3; };\n", "1: aliases: a must be a string");
	expect_error("aliases = ( { name = \"a\"; } );\n", "1: aliases[0] must be { name");
	expect_error("aliases = \"a\";\n", "1: aliases must be a group");
	expect_error("open_llm_api_model = \"m\";\naliases = { m = \"n\"; };\n",
	    "2: aliases: \"m\" is the model of upstream");
}
END_TEST

START_TEST(test_setting_names)
{
	const char *const *names = conf_setting_names();
	int have_rpm = 0, have_base = 0;

	for (; *names != NULL; names++) {
		have_rpm |= strcmp(*names, "rpm") == 0;
		have_base |= strcmp(*names, "open_llm_api_base") == 0;
	}
	ck_assert(have_rpm && have_base);
}
END_TEST

/* The shipped example loads, and openllmd.conf(5) documents every setting the parser knows. */
START_TEST(test_example_and_manual)
{
	const char *top = getenv("top_srcdir");
	char path[1024], *errors = NULL, *man;
	const char *const *names;
	struct conf *c;
	FILE *f;
	long len;

	ck_assert_msg(top != NULL, "top_srcdir is not set (run through make check)");
	snprintf(path, sizeof path, "%s/systemd/openllmd.conf.example", top);
	c = conf_load(path, &errors);
	ck_assert_msg(c != NULL, "%s", errors ? errors : "");
	conf_free(c);

	snprintf(path, sizeof path, "%s/man/openllmd.conf.5", top);
	f = fopen(path, "r");
	ck_assert_ptr_nonnull(f);
	fseek(f, 0, SEEK_END);
	len = ftell(f);
	rewind(f);
	man = calloc(1, (size_t)len + 1);
	ck_assert_int_eq(fread(man, 1, (size_t)len, f), len);
	fclose(f);
	for (names = conf_setting_names(); *names != NULL; names++) {
		char want[128];
		snprintf(want, sizeof want, "\n.B %s\n", *names);
		ck_assert_msg(strstr(man, want) != NULL, "openllmd.conf.5 does not document %s", *names);
	}
	free(man);
}
END_TEST

/* A user's daemon reads its own file under $XDG_CONFIG_HOME; root, -c and $OPENLLMD_CONFIG win. */
START_TEST(test_user_config_path)
{
	char home[300], dir[320], file[340];
	const char *p;
	FILE *f;

	snprintf(home, sizeof home, "%s/xdg.XXXXXX", test_dir);
	ck_assert_ptr_nonnull(mkdtemp(home));
	snprintf(dir, sizeof dir, "%s/openllmd", home);
	snprintf(file, sizeof file, "%s/openllmd.conf", dir);
	setenv("XDG_CONFIG_HOME", home, 1);
	unsetenv("OPENLLMD_CONFIG");

	/* Not there yet: not chosen. */
	p = conf_lookup_path(NULL, 1000);
	ck_assert(p == NULL || strcmp(p, file) != 0);

	ck_assert_int_eq(mkdir(dir, 0700), 0);
	ck_assert_ptr_nonnull(f = fopen(file, "w"));
	fclose(f);
	ck_assert_str_eq(conf_lookup_path(NULL, 1000), file);
	p = conf_lookup_path(NULL, 0);
	ck_assert(p == NULL || strcmp(p, file) != 0);
	ck_assert_str_eq(conf_lookup_path("/x.conf", 1000), "/x.conf");
	setenv("OPENLLMD_CONFIG", "/y.conf", 1);
	ck_assert_str_eq(conf_lookup_path(NULL, 1000), "/y.conf");
	unsetenv("OPENLLMD_CONFIG");
	unsetenv("XDG_CONFIG_HOME");
	unlink(file);
	rmdir(dir);
	rmdir(home);
}
END_TEST

/* Remove one entry of the test directory, depth first. */
static int
remove_entry(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
	(void)st;
	(void)flag;
	(void)ftw;
	return remove(path);
}

int
main(void)
{
	const char *tmp = getenv("TMPDIR") ? getenv("TMPDIR") : "/tmp";
	Suite *s = suite_create("conf");
	TCase *tc = tcase_create("conf");
	SRunner *sr;
	int failed;

	tcase_add_checked_fixture(tc, setup, teardown);
	tcase_add_test(tc, test_defaults);
	tcase_add_test(tc, test_fleet);
	tcase_add_test(tc, test_metagpt_names);
	tcase_add_test(tc, test_environment);
	tcase_add_test(tc, test_systemd_directories);
	tcase_add_test(tc, test_upstreams);
	tcase_add_test(tc, test_errors_name_file_and_line);
	tcase_add_test(tc, test_tokenizer_names);
	tcase_add_test(tc, test_every_problem_reported);
	tcase_add_test(tc, test_missing_file);
	tcase_add_test(tc, test_http_settings);
	tcase_add_test(tc, test_http_errors);
	tcase_add_test(tc, test_setting_names);
	tcase_add_test(tc, test_aliases);
	tcase_add_test(tc, test_user_config_path);
	tcase_add_test(tc, test_client_limits_and_visibility);
	tcase_add_test(tc, test_example_and_manual);
	suite_add_tcase(s, tc);
	snprintf(test_dir, sizeof test_dir, "%s/check_conf.XXXXXX", tmp);
	if (mkdtemp(test_dir) == NULL) {
		perror(test_dir);
		return 1;
	}
	sr = srunner_create(s);
	srunner_run_all(sr, CK_NORMAL);
	failed = srunner_ntests_failed(sr);
	srunner_free(sr);
	nftw(test_dir, remove_entry, 16, FTW_DEPTH | FTW_PHYS);    /* what failed tests left too */
	return failed == 0 ? 0 : 1;
}
