# Logs in the way Kamal does (SSHKit over Ruby's net-ssh) and runs `id`, then reports
# what net-ssh negotiated, as one JSON line on stdout.
#
#   ruby net-ssh-login.rb HOST USER KEYFILE [HOST_KEY_ALGORITHMS]
#
# HOST_KEY_ALGORITHMS (comma-separated) narrows what net-ssh accepts from the server,
# e.g. rsa-sha2-512,rsa-sha2-256 as a net-ssh without the ed25519 gem would.
require 'json'
require 'net/ssh'
require 'sshkit'
require 'sshkit/dsl'
include SSHKit::DSL

host, user, key, host_keys = ARGV
options = {
  keys: [key],
  keys_only: true,
  use_agent: false,
  auth_methods: ['publickey'],
  verify_host_key: :never, # sandboxes make fresh host keys each time
  non_interactive: true,
  timeout: 20
}
options[:host_key] = host_keys.split(',') if host_keys && !host_keys.empty?

SSHKit::Backend::Netssh.configure { |ssh| ssh.ssh_options = options }
SSHKit.config.output = SSHKit::Formatter::BlackHole.new($stderr)
id = nil
on ["#{user}@#{host}"] do
  id = capture(:id)
end

negotiated = Net::SSH.start(host, user, options) do |ssh|
  algs = ssh.transport.algorithms
  { kex: algs.kex, host_key: algs.host_key, cipher: algs.encryption_server, mac: algs.hmac_server }
end

puts JSON.generate({ id: id, net_ssh: Net::SSH::Version::STRING }.merge(negotiated))
