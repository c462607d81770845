# frozen_string_literal: true

# Entry point of the vagrant-vessel provider plugin: `require_relative` this file from a
# Vagrantfile (no network, no `vagrant plugin install`), or install the gem built from
# vagrant-vessel.gemspec with `vagrant plugin install ./vagrant-vessel-0.1.0.gem`.
require_relative "vagrant-vessel/plugin"
