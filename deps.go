//go:build tools

package deps

import (
	_ "github.com/NVIDIA/go-nvml/pkg/nvml"
	_ "github.com/prometheus/client_golang/prometheus"
	_ "gitlab.com/gitlab-org/api/client-go"
	_ "gopkg.in/yaml.v3"
)
