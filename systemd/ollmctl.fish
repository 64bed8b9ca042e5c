# fish completion for ollmctl(1)

set -l commands chat conversations stats logs top models ping tokens reset key help

# The ids of the saved conversations, for chat --cid.
function __ollmctl_cids
	set -l dir ~/.local/state/ollmctl/conversations
	set -q XDG_STATE_HOME; and test -n "$XDG_STATE_HOME"; and set dir $XDG_STATE_HOME/ollmctl/conversations
	for f in $dir/*.json
		string replace -r '^.*/(.*)\.json$' '$1' -- $f
	end
end

complete -c ollmctl -f
complete -c ollmctl -s S -l socket -r -F -d 'The daemon socket'
complete -c ollmctl -n "not __fish_seen_subcommand_from $commands" -s V -l version -d 'Print the version'
complete -c ollmctl -n "not __fish_seen_subcommand_from $commands" -s h -l help -d 'Print the usage'

complete -c ollmctl -n "not __fish_seen_subcommand_from $commands" -a chat -d 'Talk to the model'
complete -c ollmctl -n "not __fish_seen_subcommand_from $commands" -a conversations -d 'The saved conversations'
complete -c ollmctl -n "not __fish_seen_subcommand_from $commands" -a stats -d 'Usage counted by the daemon'
complete -c ollmctl -n "not __fish_seen_subcommand_from $commands" -a logs -d 'Finished requests, newest first'
complete -c ollmctl -n "not __fish_seen_subcommand_from $commands" -a top -d 'A live view of the daemon'
complete -c ollmctl -n "not __fish_seen_subcommand_from $commands" -a models -d 'The model servers and their models'
complete -c ollmctl -n "not __fish_seen_subcommand_from $commands" -a ping -d 'Check that the daemon answers'
complete -c ollmctl -n "not __fish_seen_subcommand_from $commands" -a tokens -d 'Count the tokens of a text'
complete -c ollmctl -n "not __fish_seen_subcommand_from $commands" -a reset -d 'Start the usage counters from zero'
complete -c ollmctl -n "not __fish_seen_subcommand_from $commands" -a key -d 'Make an API key for the HTTP front'
complete -c ollmctl -n "not __fish_seen_subcommand_from $commands" -a help -d 'The usage of a command'
complete -c ollmctl -n "__fish_seen_subcommand_from help" -a "$commands"

complete -c ollmctl -n "__fish_seen_subcommand_from chat" -s m -l model -x -d 'The model to ask'
complete -c ollmctl -n "__fish_seen_subcommand_from chat" -s s -l system -x -d 'A system message'
complete -c ollmctl -n "__fish_seen_subcommand_from chat" -l max-tokens -x -d 'The longest reply, in tokens'
complete -c ollmctl -n "__fish_seen_subcommand_from chat" -l temperature -x -d 'Sampling temperature'
complete -c ollmctl -n "__fish_seen_subcommand_from chat" -l no-stream -d 'Wait for the whole reply'
complete -c ollmctl -n "__fish_seen_subcommand_from chat" -l tag -x -d 'An accounting label'
complete -c ollmctl -n "__fish_seen_subcommand_from chat" -s c -l continue -d 'Continue the last conversation'
complete -c ollmctl -n "__fish_seen_subcommand_from chat" -l cid -x -a '(__ollmctl_cids)' -d 'Continue or start conversation ID'
complete -c ollmctl -n "__fish_seen_subcommand_from chat" -l no-save -d 'Do not keep this conversation'

complete -c ollmctl -n "__fish_seen_subcommand_from stats" -l json -d 'The stats as JSON'
complete -c ollmctl -n "__fish_seen_subcommand_from stats" -l fleet -d 'The usage of every node, from the shared database'
complete -c ollmctl -n "__fish_seen_subcommand_from stats" -l by -x -a 'model user tag day' -d 'Only one breakdown'
complete -c ollmctl -n "__fish_seen_subcommand_from stats" -l since -x -d 'Only requests since then (30m, 1h, HH:MM, YYYY-MM-DD, ISO 8601)'

complete -c ollmctl -n "__fish_seen_subcommand_from logs" -l fleet -d 'The requests of every node, from the shared database'
complete -c ollmctl -n "__fish_seen_subcommand_from logs" -l since -x -d 'Only requests finished at or after then'
complete -c ollmctl -n "__fish_seen_subcommand_from logs" -l until -x -d 'Only requests finished before then'
complete -c ollmctl -n "__fish_seen_subcommand_from logs" -l user -x -a '(__fish_complete_users)' -d 'Only this user\'s requests'
complete -c ollmctl -n "__fish_seen_subcommand_from logs" -l tag -x -d 'Only requests with this tag'
complete -c ollmctl -n "__fish_seen_subcommand_from logs" -s m -l model -x -d 'Only requests for this model'
complete -c ollmctl -n "__fish_seen_subcommand_from logs" -l status -x -a 'done error cancelled' -d 'Only requests that ended so'
complete -c ollmctl -n "__fish_seen_subcommand_from logs" -s n -l limit -x -d 'At most N rows'
complete -c ollmctl -n "__fish_seen_subcommand_from logs" -l json -d 'The logs as JSON'

complete -c ollmctl -n "__fish_seen_subcommand_from top" -s b -l batch -d 'Print snapshots one after another'
complete -c ollmctl -n "__fish_seen_subcommand_from top" -s d -l delay -x -d 'Time between refreshes'
complete -c ollmctl -n "__fish_seen_subcommand_from top" -s n -l iterations -x -d 'Stop after N snapshots'

complete -c ollmctl -n "__fish_seen_subcommand_from models ping" -l json -d 'The result as JSON'

complete -c ollmctl -n "__fish_seen_subcommand_from tokens" -F
complete -c ollmctl -n "__fish_seen_subcommand_from tokens" -s e -l encoding -x -a 'cl100k_base o200k_base' -d 'The encoding'
complete -c ollmctl -n "__fish_seen_subcommand_from tokens" -s m -l model -x -d 'The tokenizer of the upstream serving a model'
complete -c ollmctl -n "__fish_seen_subcommand_from tokens" -l ids -d 'Print the token ids'
complete -c ollmctl -n "__fish_seen_subcommand_from tokens" -l json -d 'Count, encoding (and ids) as JSON'

complete -c ollmctl -n "__fish_seen_subcommand_from reset" -s y -l yes -d 'Do not ask'

complete -c ollmctl -n "__fish_seen_subcommand_from key" -a new -d 'Make a new key'
complete -c ollmctl -n "__fish_seen_subcommand_from key" -l user -x -a '(__fish_complete_users)' -d 'Who the key bills'
complete -c ollmctl -n "__fish_seen_subcommand_from key" -l tag -x -d 'The accounting label of its requests'
